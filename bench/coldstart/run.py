"""Cold start: import-and-init time of each function's handler module in a fresh process,
next to a bare Mangum + Starlette hello-world and `python -c pass`.

    python -m bench.coldstart.run [--runs N] [--out bench/coldstart/RESULTS.md]

Each measurement is a new interpreter importing the module exactly as Lambda's runtime does
(`app.handler` with the function folder and the layer on the path: here, the package names),
timed from process start to the end of the import, median of N runs, contenders interleaved.
The configuration is the default one (no Redis, no Upstash, no queue, no secret). The heavy
optional libraries each function ends up with are listed, checked the same way as
tests/contract/test_function_imports.py.
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

from bench.report import provenance
from gateway.app import HTTP_FUNCTION_MODULES

JOB_MODULES = (
    "functions.refresh_views.app",
    "functions.maintenance.app",
    "functions.score_listings.app",
    "functions.order_worker.app",
)
HEAVY = ("boto3", "onnxruntime", "numpy", "upstash_redis", "botocore.session")
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
PROBE = """
import time
started = time.perf_counter()
import importlib, json, sys
importlib.import_module(sys.argv[1])
elapsed = time.perf_counter() - started
heavy = sys.argv[2:]
loaded = sorted(h for h in heavy if h in sys.modules)
print(json.dumps({"ms": elapsed * 1000, "heavy": loaded}))
"""


def probe(module: str, env: dict[str, str]) -> tuple[float, list[str]]:
    """(ms from interpreter start to module imported, heavy libraries loaded)."""
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
        "PYTHONPATH": f".:{hello_dir}",
        "JWT_SECRET": "x" * 32,
        "CURSOR_SECRET": "y" * 32,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    modules = ["pass", "hello_app", *HTTP_FUNCTION_MODULES, *JOB_MODULES]
    for module in modules:  # warm the OS file cache and the .pyc files once
        probe(module, env)
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
    for module in modules:
        label = {"pass": "`python -c pass`", "hello_app": "Mangum + Starlette hello-world"}.get(
            module, module
        )
        ratio = f"{median[module] / hello:.2f}×" if module != "pass" else ""
        rows.append(
            f"| {label} | {median[module]:.0f} | {ratio} | {', '.join(heavy[module]) or '—'} |"
        )
    worst_http = max(median[m] / hello for m in HTTP_FUNCTION_MODULES)
    lines = [
        "# Cold start: import and init per function",
        "",
        *provenance(f"python -m bench.coldstart.run {' '.join(sys.argv[1:])}"),
        "",
        f"Wall time of a fresh process importing the handler module (median of {args.runs}, "
        "contenders interleaved; includes interpreter start-up, as Lambda's init does).",
        "",
        "| module | ms | vs hello-world | heavy libraries loaded |",
        "|---|---:|---:|---|",
        *rows,
        "",
        f"Slowest HTTP function: **{worst_http:.2f}× the hello-world** (target ≤ 2.5×). "
        "score_listings imports onnxruntime only when it loads its model (first run: "
        "bench/scoring/RESULTS.md); the purchase function imports boto3 only when a queue is "
        "configured, and any function only with `DATABASE_SECRET_ARN`.",
    ]
    text = "\n".join(lines)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
