"""Where a purchase's time goes on its way through the gateway, before and after the changes
that took the largest costs down (PROFILE.md).

    python -m bench.capacity.purchase_profile [--baseline REF] [--rounds N] [--seconds S]
                                     [--concurrency N] [--out bench/capacity/PROFILE.md]

DATABASE_URL (as admin) gets `edgemart_bench_capacity_profile`, made afresh: 10,000 products
with stock enough for any run, 64 funded buyers (bench.purchase.run.prepare_database), and a
login role in `edgemart_app`, which the gateway connects as (row-level security applies, as
in production). Redis is REDIS_URL's.

Three contenders, in `--rounds` rounds whose order rotates, `--seconds` each, `--concurrency`
purchases in flight:
- **this checkout**: the gateway app called in process (ASGI, no sockets, no HTTP parsing),
  each call a purchase with its own Idempotency-Key (bench/capacity/purchase_round.py, run in
  a fresh process);
- **`--baseline`**: the same driver over the gateway of an older commit, checked out into a
  temporary worktree (default: the commit before the purchase path was taken down);
- **`purchase()` directly**: bench.purchase.run's Python driver calling the SQL function over
  one connection per client, as the purchase bench does: the database's share.
Reported: purchases/s and the driver process's CPU per purchase (the app's CPU plus the
driver's small share), medians and ranges, and paired ratios. Then one more round of each
checkout under cProfile, its internal time per purchase grouped by component.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench.purchase.run import drive, ours, prepare_database
from bench.report import database_command, provenance, publish
from bench.summary import median_range, paired_ratios

ROOT = Path(__file__).resolve().parents[2]
ROUND = Path(__file__).with_name("purchase_round.py")
DATABASE = "edgemart_bench_capacity_profile"
APP_ROLE = "edgemart_bench_profile_app"
SECRET = "bench-capacity-profile-" + "s" * 32
DEFAULT_BASELINE = "34d9a46"
"""The last commit before the token memory, the socket check and the shared broadcast send."""

COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PyJWT and edgemart.auth", ("/jwt/", "edgemart/auth.py", "edgemart/tokencache.py")),
    ("psycopg and its pool", ("/psycopg/", "/psycopg_pool/")),
    ("redis-py", ("/redis/",)),
    (
        "invalidation (services, broadcast, shared cache, changes)",
        (
            "edgemart/services.py",
            "edgemart/broadcast.py",
            "edgemart/sharedcache.py",
            "edgemart/changes.py",
            "edgemart/live/",
        ),
    ),
    (
        "edgemart request context, inputs, validation",
        (
            "edgemart/requestcontext.py",
            "edgemart/requestinputs.py",
            "edgemart/validation.py",
            "edgemart/bodylimit.py",
            "edgemart/requestid.py",
            "edgemart/idempotency.py",
            "edgemart/routing.py",
        ),
    ),
    ("the purchase function", ("functions/purchase/",)),
    (
        "edgemart metrics and logs",
        (
            "edgemart/metrics.py",
            "edgemart/requestmetrics.py",
            "edgemart/accesslog.py",
            "edgemart/logging.py",
            "/logging/",
        ),
    ),
    ("Starlette", ("/starlette/",)),
    ("json", ("/json/",)),
    ("asyncio", ("/asyncio/", "selectors.py")),
    ("uuid", ("uuid.py",)),
)


def component(filename: str) -> str:
    for name, markers in COMPONENTS:
        if any(marker in filename for marker in markers):
            return name
    if filename == "~":
        return "C functions called from Python (socket sends, polls, builtins)"
    return "other"


def cpu_by_component(stats_path: Path, purchases: int) -> dict[str, float]:
    """Internal time per purchase (µs) by component, from a cProfile dump."""
    stats = pstats.Stats(str(stats_path))
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, _), row in stats.stats.items():  # type: ignore[attr-defined]
        totals[component(filename)] += row[2]
    return {name: seconds / purchases * 1e6 for name, seconds in totals.items()}


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`ref` checked out into a temporary worktree of this repository."""
    with tempfile.TemporaryDirectory(prefix="edgemart-baseline-") as folder:
        path = Path(folder) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )


def app_round(
    tree: Path, url: str, seconds: float, concurrency: int, profile: Path | None = None
) -> dict[str, Any]:
    """One round of `purchase_round.py` over the gateway of the checkout at `tree`."""
    environment = {
        **os.environ,
        "PYTHONPATH": f"{tree}:{tree / 'layers' / 'edgemart'}",
        "LOG_LEVEL": "WARNING",
    }
    arguments = [url, SECRET, str(seconds), str(concurrency)]
    if profile is not None:
        arguments.append(str(profile))
    done = subprocess.run(
        [sys.executable, str(ROUND), *arguments],
        env=environment,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"a round over {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def direct_round(url: str, seconds: float, concurrency: int, products: list[str]) -> dict[str, Any]:
    rate, _, cores = asyncio.run(drive(url, concurrency, seconds, products, ours))
    return {"rate": rate, "cpu_us": cores / rate * 1e6}


def app_role(url: str) -> str:
    """`url` connecting as a login member of `edgemart_app` (trust authentication)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone():
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN IN ROLE edgemart_app".encode())
    return make_conninfo(url, user=APP_ROLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("PROFILE.md"))
    args = parser.parse_args()
    admin = os.environ["DATABASE_URL"]
    owner_url, products = prepare_database(admin, DATABASE)
    url = app_role(owner_url)
    names = ("this checkout", f"baseline {args.baseline}", "purchase() directly")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with worktree(args.baseline) as baseline:
        trees = {names[0]: ROOT, names[1]: baseline}
        for round_index in range(args.rounds):
            for offset in range(len(names)):
                name = names[(round_index + offset) % len(names)]
                if name in trees:
                    outcome = app_round(trees[name], url, args.seconds, args.concurrency)
                else:
                    outcome = direct_round(owner_url, args.seconds, args.concurrency, products)
                results[name].append(outcome)
                print(name, json.dumps(outcome), flush=True)
        profiles: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as folder:
            for name, tree in trees.items():
                path = Path(folder) / f"{len(profiles)}.prof"
                outcome = app_round(tree, url, args.seconds, args.concurrency, path)
                profiles[name] = cpu_by_component(path, sum(outcome["statuses"].values()))
    publish(args.out, report(args, names, results, profiles))


def report(
    args: argparse.Namespace,
    names: Sequence[str],
    results: dict[str, list[dict[str, Any]]],
    profiles: dict[str, dict[str, float]],
) -> list[str]:
    rates = {name: [r["rate"] for r in results[name]] for name in names}
    lines = [
        "# One purchase through the gateway: where its time goes",
        "",
        *provenance(
            database_command("bench.capacity.purchase_profile"),
            setup="PostgreSQL and Redis "
            "on the same machine; the gateway as a member of edgemart_app",
        ),
        "",
        f"10,000 products, 64 buyers, {args.concurrency} purchases in flight, rounds of "
        f"{args.seconds:g} s, {args.rounds} rounds (order rotating). Median (range).",
        "",
        "| contender | purchases/s | driver CPU µs per purchase | statuses |",
        "|---|---:|---:|---|",
    ]
    for name in names:
        cpu = [r["cpu_us"] for r in results[name]]
        statuses: dict[str, int] = defaultdict(int)
        for outcome in results[name]:
            for status, count in outcome.get("statuses", {}).items():
                statuses[status] += count
        shown = ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())) or "-"
        lines.append(f"| {name} | {median_range(rates[name])} | {median_range(cpu)} | {shown} |")
    lines += ["", "Paired ratios of purchases/s (median of the rounds' ratios, range):", ""]
    for numerator, denominator in (
        (names[0], names[2]),
        (names[1], names[2]),
        (names[0], names[1]),
    ):
        ratios = paired_ratios(rates[numerator], rates[denominator])
        lines.append(f"- {numerator} / {denominator}: {median_range(ratios, '{:.2f}×')}")
    lines += [
        "",
        "CPU per purchase by component under cProfile (internal time, µs; cProfile slows "
        "Python code about twofold, so compare the columns, not with the table above):",
        "",
        f"| component | {' | '.join(profiles)} |",
        f"|---|{'---:|' * len(profiles)}",
    ]
    components = sorted(
        {c for p in profiles.values() for c in p}, key=lambda c: -profiles[names[1]].get(c, 0)
    )
    for name in components:
        cells = " | ".join(f"{p.get(name, 0):,.0f}" for p in profiles.values())
        lines.append(f"| {name} | {cells} |")
    totals = " | ".join(f"**{sum(p.values()):,.0f}**" for p in profiles.values())
    lines.append(f"| total | {totals} |")
    return lines


if __name__ == "__main__":
    main()
