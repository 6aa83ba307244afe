"""What each function pays at cold start: HTTP functions never import the heavy optional
libraries (onnxruntime, numpy, boto3, upstash-redis, prometheus_client, OpenTelemetry) with
the default configuration; only score_listings loads onnxruntime, and only when it scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.app import HTTP_FUNCTION_MODULES

# Packages, and botocore's client machinery: Powertools imports the bare `botocore` package
# (under a millisecond) whenever it is installed, as it always is in Lambda; building a
# session or client is the cost that matters. prometheus_client is the gateway's alone
# (GET /metrics): Lambda exports its metrics as CloudWatch EMF.
HEAVY = (
    "onnxruntime",
    "numpy",
    "boto3",
    "upstash_redis",
    "botocore.session",
    "botocore.client",
    "prometheus_client",
    "opentelemetry",  # tracing is off by default (TRACING)
)

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
heavy = sys.argv[2:]
print(json.dumps(sorted(
    name for name in sys.modules
    if any(name == h or name.startswith(h + ".") for h in heavy)
)))
"""


def heavy_modules_after_import(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ".", "JWT_SECRET": "x" * 32},
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize("module", [*HTTP_FUNCTION_MODULES, "functions.score_listings.app"])
def test_function_imports_no_heavy_optional_library(module: str) -> None:
    assert heavy_modules_after_import(module) == []
