"""What a Lambda invocation costs in process: edgemart's function handlers vs bare Mangum +
Starlette vs a Powertools `APIGatewayHttpResolver` route, for a cached read and for a purchase
whose database is the same stub for all.

    python -m bench.lambda_overhead.run [--rounds N] [--invocations N] [--baseline REV]
                                        [--profile-invocations N] [--out PATH]

Each contender runs in a process of its own (`worker`), as in its own execution environment,
and is invoked in process, with no server and no runtime API: its Lambda handler called with
the API Gateway HTTP API (v2) event of the route and a context object, as the contract tests
call them. A round asks every contender, in an order that rotates from round to round, for
`--invocations` invocations of each route back to back; the reported figure is µs per
invocation, median and range over the rounds, and each round's ratio to the Powertools
resolver's.

`--baseline REV` (repeatable) adds edgemart as it was at git revision REV (its `layers/` and
`functions/` exported to a temporary directory, the benchmark's own code unchanged) as one more
contender: before and after each change, in the same rounds.

Then edgemart's invocations of each route are sampled by py-spy (`breakdown`): where its µs
go, by part of the request path. Target: edgemart's cached read ≤ 1.2× the Powertools
resolver's, with the request id, access log and memory rate limiter on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.lambda_overhead import breakdown
from bench.lambda_overhead.invocations import ROUTE_LABELS, ROUTES
from bench.lambda_overhead.worker import REPLY
from bench.report import provenance, publish

REPOSITORY = Path(__file__).resolve().parents[2]
REFERENCE = "powertools"
TARGET_RATIO = 1.2
COMPARED_HEADERS = ("content-type", "etag", "cache-control", "vary", "location")
PART_CALLS = 2000
PART_REPEATS = 21
LABELS = {
    "edgemart": "edgemart function handler (this revision)",
    "bare": "bare Mangum + Starlette",
    "powertools": "Powertools resolver + `inject_lambda_context`",
    "powertools_correlation": "Powertools resolver + `inject_lambda_context` with correlation id",
}
UNSET_FOR_WORKERS = (
    "DATABASE_URL",
    "DATABASE_SECRET_ARN",
    "DATABASE_REPLICA_URL",
    "REDIS_URL",
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "TRACING",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
)
"""Nothing the workers reach over the network: the database is the stub, the limiter in
memory."""


@dataclass
class Worker:
    key: str
    label: str
    process: subprocess.Popen[str]
    us: dict[str, list[float]] = field(default_factory=lambda: {route: [] for route in ROUTES})

    def ask(self, **command: Any) -> Any:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        while True:
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"{self.key} exited (code {self.process.wait()})")
            if line.startswith(REPLY):
                return json.loads(line.removeprefix(REPLY))


def worker_environment(python_path: Sequence[Path]) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in UNSET_FOR_WORKERS}
    environment["PYTHONPATH"] = os.pathsep.join(str(path) for path in python_path)
    return environment


def code_path(root: Path) -> list[Path]:
    """Where a worker imports edgemart and the functions from (`root`), then the benchmark
    and the tests' harness (this repository)."""
    paths = [root, root / "layers" / "edgemart"]
    return paths if root == REPOSITORY else [*paths, REPOSITORY]


@contextmanager
def exported(revision: str) -> Iterator[Path]:
    """`layers/` and `functions/` as they were at `revision`, in a temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="lambda-overhead-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPOSITORY), "archive", revision, "layers", "functions"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def started(
    key: str, contender: str, label: str, root: Path, prefix: Sequence[str] = ()
) -> Iterator[Worker]:
    """A worker process for `contender` with edgemart from `root`, run under `prefix` (a
    profiler) when given; stopped at the end."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "bench.lambda_overhead.worker", contender],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
        env=worker_environment(code_path(root)),
    )
    try:
        yield Worker(key, label, process)
    finally:
        stdin: IO[str] | None = process.stdin
        if stdin is not None:
            stdin.close()
        process.wait(timeout=60)


def sampled(route: str, seconds: float, rate: int) -> dict[str, Any]:
    """py-spy's samples of a fresh edgemart worker invoking `route` for `seconds`, by part
    of the path (`breakdown`)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="lambda-overhead-") as directory:
        out = Path(directory) / "samples.txt"
        spy = [py_spy, "record", "--full-filenames", "--format", "raw"]
        spy += ["--rate", str(rate), "--output", str(out), "--"]
        with started("sampled", "edgemart", "sampled", REPOSITORY, spy) as worker:
            worker.ask(op="loop", route=route, seconds=seconds)  # warm
            invocations = worker.ask(op="loop", route=route, seconds=seconds)["invocations"]
        samples = breakdown.parse_raw(out.read_text())
    return {
        "parts": breakdown.part_shares(samples),
        "top": breakdown.top_functions(samples, 25),
        "samples": sum(count for stack, count in samples if breakdown.invocation_frames(stack)),
        "invocations": invocations,
    }


def rotated(items: Sequence[Worker], by: int) -> list[Worker]:
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def measure(workers: Sequence[Worker], rounds: int, invocations: int) -> None:
    for worker in workers:  # warm: imports done, caches and code paths hot
        for route in ROUTES:
            worker.ask(op="time", route=route, invocations=max(invocations, 500))
    for index in range(rounds):
        for route in ROUTES:
            for worker in rotated(workers, index):
                worker.us[route].append(
                    worker.ask(op="time", route=route, invocations=invocations)["us"]
                )


def ratios(worker: Worker, reference: Worker, route: str) -> list[float]:
    """Each round's µs per invocation over the reference's in the same round."""
    return [
        ours / theirs for ours, theirs in zip(worker.us[route], reference.us[route], strict=True)
    ]


def spread(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{digits}f}{unit} ({low:.{digits}f}–{high:.{digits}f})"


# ---- The report ----


def check_lines(checks: Mapping[str, Mapping[str, Any]], workers: Sequence[Worker]) -> list[str]:
    """Whether every contender answered each route alike: status, body, cache headers, the
    database call."""
    lines = [
        "| route | contender | status | body | content type, ETag, Cache-Control, Vary, Location "
        "| database call |",
        "|---|---|---|---|---|---|",
    ]
    reference = checks[REFERENCE]
    for route in ROUTES:
        for worker in workers:
            answer = checks[worker.key][route]
            same_body = answer["body"] == reference[route]["body"]
            call = (
                "none"
                if answer["database_calls"] == 0
                else (
                    "1, same arguments"
                    if answer["database_args"] == reference[route]["database_args"]
                    else f"{answer['database_calls']}, other arguments: {answer['database_args']}"
                )
            )
            headers = {name: answer["headers"].get(name) for name in COMPARED_HEADERS}
            expected = {name: reference[route]["headers"].get(name) for name in COMPARED_HEADERS}
            lines.append(
                f"| {ROUTE_LABELS[route]} | {worker.label} | {answer['status']} | "
                f"{len(answer['body'])} characters, {'same' if same_body else 'DIFFERENT'} | "
                f"{'same' if headers == expected else f'DIFFERENT: {headers}'} | {call} |"
            )
    return lines


def result_lines(workers: Sequence[Worker], reference: Worker) -> list[str]:
    lines = [
        "| route | contender | µs per invocation, median (range) | ratio to the Powertools "
        "resolver, median (range) |",
        "|---|---|---|---|",
    ]
    for route in ROUTES:
        for worker in workers:
            ratio = spread(ratios(worker, reference, route), "×", 2)
            lines.append(
                f"| {ROUTE_LABELS[route]} | {worker.label} | {spread(worker.us[route])} | {ratio} |"
            )
    return lines


CONTENDER_LINES = (
    "## What each contender does",
    "",
    "Every contender is invoked with the same API Gateway HTTP API (v2) event per route (the "
    "contract tests' fixtures, tests/events; no `Accept-Encoding`, so the home document goes "
    "out as text) and a context object like the tests' (`FakeLambdaContext`), each invocation "
    "on a fresh copy of the event. Whatever a contender writes to stdout (EMF lines, log "
    "lines) goes to /dev/null, formatted and written as in Lambda.",
    "",
    "- **edgemart** (`edgemart_functions.py`): `functions.home.app.handler` and "
    "`functions.purchase.app.handler`, imported as Lambda imports them, their services built "
    "from the environment: request id, access log (sampled at the default 1%), the memory rate "
    "limiter (`RATE_LIMIT_BACKEND=memory`, limits raised to 10^9 a minute so that every "
    "request is checked and none refused), request metrics and their EMF lines, the Lambda "
    "context on log lines; tracing off, no Redis. Home is an L1 hit: the document (11.4 KB, "
    "`bench.ratelimit.gateway.home_document`) is put in the in-process cache once, as a fill "
    "leaves it, for the run. The purchase's primary `Database` gets the stub as its pool, so "
    "the circuit breaker, the retry policy, the token check (in the rate-limit gate, then "
    "reused by the route), the Idempotency-Key and body checks of the route table, the "
    "idempotency fingerprint, the purchase metric, the cache invalidation after the write and "
    "the 201 response all run.",
    "- **bare Mangum + Starlette** (`bare.py`): one Starlette app and `Mangum(app, "
    'lifespan="off")` per function, no middleware. Home answers the same bytes and cache '
    "headers (ETag, Cache-Control, Vary) from a dict holding them with their expiry; the "
    "purchase does `handwritten.py`'s work and awaits the stub.",
    "- **Powertools resolver** (`powertools.py`): an `APIGatewayHttpResolver` route per "
    "function, the handler wrapped by `Logger.inject_lambda_context` (the reference of every "
    "ratio); the *correlation id* row also sets `correlation_id_path` to API Gateway's request "
    "id (a JMESPath search per invocation), the closest to edgemart's request id. Home answers "
    "the same text and headers from a dict; the purchase does `handwritten.py`'s work and calls "
    "the stub through its sync face.",
    "- **the purchase, by hand** (`handwritten.py`): the bearer token verified by PyJWT "
    "(HS256, `exp` required), `sub` a non-empty string; `Idempotency-Key` present, 1-255 "
    "printable ASCII; the body sent as `application/json`, parsed by `json.loads`, an object "
    "with `product_id` (hyphenated UUID), `quantity` (integer 1-10, not a boolean), optional "
    "`expected_unit_price_cents` (integer 1-10^9) and nothing else; the fingerprint of the "
    "body (sha256 of its canonical JSON); the database call with edgemart's 13 arguments; "
    "201 with the order as JSON, `Cache-Control: no-store` and `Location`. Not done by hand: "
    "rate limiting, a request id, metrics, logs, cache invalidation.",
    "- **the stub** (`stub.py`): one object answering every statement with the same canned "
    "row (a new order, not a replay), counting the calls and keeping the arguments, which the "
    "check below compares.",
)


def change_lines(workers: Sequence[Worker]) -> list[str]:
    """edgemart before the first baseline's change and now, per route, when there are
    baselines."""
    ours, earliest = workers[0], workers[1]
    if not earliest.key.startswith("baseline"):
        return []
    changes = []
    for route in ROUTES:
        before, after = statistics.median(earliest.us[route]), statistics.median(ours.us[route])
        changes.append(
            f"{ROUTE_LABELS[route]} {before:.0f} → {after:.0f} µs per invocation "
            f"({before / after:.1f}× faster)"
        )
    since = earliest.label.removeprefix("edgemart at ")
    return ["", f"edgemart from {since} to this revision: {'; '.join(changes)}."]


def revision_lines(revisions: Sequence[str]) -> list[str]:
    """What each baseline revision is: its commit's subject."""
    if not revisions:
        return []
    lines = ["", "Earlier revisions, each one change later than the one before:", ""]
    for revision in revisions:
        subject = subprocess.run(
            ["git", "-C", str(REPOSITORY), "log", "-1", "--format=%h %s", revision],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        short, _, text = subject.partition(" ")
        text = text if len(text) <= 200 else text[:199] + "…"
        named = f"`{revision}`" if revision == short else f"`{revision}` ({short})"
        lines.append(f"- {named}: {text}")
    return lines


def breakdown_lines(profile: Mapping[str, Any], measured_us: float) -> list[str]:
    parts: Mapping[str, float] = profile["parts"]
    lines = ["| part | share of the samples | ≈ µs of the measured median |", "|---|---|---|"]
    for name, share in sorted(parts.items(), key=lambda item: item[1], reverse=True):
        if share >= 0.005:
            lines.append(f"| {name} | {share:.1%} | {share * measured_us:.1f} |")
    lines += ["", "<details><summary>Innermost frames sampled most</summary>", ""]
    lines += ["| frame | share of the samples |", "|---|---|"]
    lines += [f"| `{name}` | {share:.1%} |" for name, share in profile["top"]]
    lines += ["", "</details>"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Short batches, many rounds: the machine's swings hit the contenders of a round alike.
    parser.add_argument("--rounds", type=int, default=101)
    parser.add_argument("--invocations", type=int, default=200)
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="git revision of edgemart to run as one more contender (repeatable)",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-rate", type=int, default=1000, help="py-spy samples a second")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()
    with ExitStack() as stack:
        workers = [
            stack.enter_context(started(key, key, label, REPOSITORY))
            for key, label in LABELS.items()
        ]
        for index, revision in enumerate(args.baseline, start=1):
            root = stack.enter_context(exported(revision))
            label = f"edgemart at `{revision}`"
            worker = stack.enter_context(started(f"baseline {revision}", "edgemart", label, root))
            workers.insert(index, worker)
        checks = {worker.key: worker.ask(op="check") for worker in workers}
        measure(workers, args.rounds, args.invocations)
        ours = workers[0]
        parts = ours.ask(op="parts", number=PART_CALLS, repeat=PART_REPEATS)["parts"]
    profiles = {route: sampled(route, args.profile_seconds, args.profile_rate) for route in ROUTES}
    reference = next(worker for worker in workers if worker.key == REFERENCE)
    report(args, workers, reference, checks, profiles, parts)


def report(
    args: argparse.Namespace,
    workers: Sequence[Worker],
    reference: Worker,
    checks: Mapping[str, Mapping[str, Any]],
    profiles: Mapping[str, Any],
    parts: Sequence[Sequence[Any]],
) -> None:
    ours = workers[0]
    cached = ratios(ours, reference, "home")
    verdict = "met" if statistics.median(cached) <= TARGET_RATIO else "missed"
    lines = [
        "# Lambda per-invocation overhead, in process",
        "",
        *provenance(f"python -m bench.lambda_overhead.run {' '.join(sys.argv[1:])}".strip()),
        "",
        f"{args.rounds} rounds; in each, every contender ({len(workers)} processes) runs "
        f"{args.invocations:,} invocations of each route back to back, the contenders' order "
        "rotating from round to round. Ratios are per round, against the Powertools resolver "
        "(`inject_lambda_context` without a correlation id) of the same round.",
        "",
        f"**Target (cached read ≤ {TARGET_RATIO}× the Powertools resolver): {verdict}**, "
        f"edgemart at {spread(cached, '×', 2)}.",
        "",
        *result_lines(workers, reference),
        *revision_lines(args.baseline),
        *change_lines(workers),
        "",
        *CONTENDER_LINES,
        "",
        "## Every contender answered alike",
        "",
        *check_lines(checks, workers),
    ]
    for route in ROUTES:
        lines += [
            "",
            f"## Where edgemart's µs go: {ROUTE_LABELS[route]}",
            "",
            f"py-spy, {args.profile_rate} samples a second from outside a fresh edgemart "
            f"process invoking the route back to back for {args.profile_seconds:g} s "
            f"({profiles[route]['invocations']:,} invocations, {profiles[route]['samples']:,} "
            "samples inside them); each sample in the part of the path of its innermost frame "
            "(the standard library's in its caller's, builtins in the Python frame that called "
            "them); shares scaled to the median measured above. A pause lands more readily on "
            "a system call, so lines that make one (asyncio's `_set_running_loop`, which asks "
            "for the process id; the write to stdout) come out somewhat larger than they are.",
            "",
            *breakdown_lines(profiles[route], statistics.median(ours.us[route])),
        ]
    lines += [
        "",
        "## Pieces of edgemart's routes alone",
        "",
        f"In the edgemart process after the rounds, {PART_CALLS:,} calls back to back, "
        f"{PART_REPEATS} times; rows marked ↳ are what the row above is made of, or what it is "
        "compared with.",
        "",
        "| piece | µs per call, median | fastest |",
        "|---|---|---|",
        *(f"| {what} | {median:.1f} | {fastest:.1f} |" for what, median, fastest in parts),
    ]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
