"""Listing scoring: onnxruntime session init, listings scored per second at batch sizes 1, 32
and 256 (model alone, and the whole score_listings job against PostgreSQL), and the scoring
function's cold start next to the HTTP functions'.

    python -m bench.scoring.run [--rounds N] [--out bench/scoring/RESULTS.md]

Uses DATABASE_URL as admin to create `edgemart_bench_scoring` (else an embedded PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench.database import admin_url, fresh_database
from bench.report import provenance, publish
from edgemart.scoring.features import Listing, listing_features
from edgemart.scoring.model import BUNDLED_MODEL_PATH, load_onnx_scorer
from edgemart.services import Services
from edgemart.settings import Settings
from gateway.app import HTTP_FUNCTION_MODULES
from gateway.democatalog import seed_catalog

BATCH_SIZES = (1, 32, 256)
DATABASE = "edgemart_bench_scoring"
WORDS = "oak walnut lamp desk chair solid hand made wool rug soft linen cotton steel".split()


def sample_listings(count: int, seed: int = 3) -> list[Listing]:
    rng = random.Random(seed)
    return [
        Listing(
            name=" ".join(rng.choices(WORDS, k=rng.randint(2, 8))).title(),
            description=" ".join(rng.choices(WORDS, k=rng.randint(0, 80))),
            price_cents=rng.randint(100, 200_000),
            category_median_price_cents=rng.choice([None, 5_000, 20_000]),
            stock=rng.randint(0, 50),
            store_rating=rng.choice([None, 3.9, 4.8]),
        )
        for _ in range(count)
    ]


def session_init_ms(rounds: int) -> tuple[float, float]:
    """(first load in this process incl. importing onnxruntime, median later load) in ms."""
    started = time.perf_counter()
    load_onnx_scorer(BUNDLED_MODEL_PATH)
    first = (time.perf_counter() - started) * 1000
    later = []
    for _ in range(rounds):
        started = time.perf_counter()
        load_onnx_scorer(BUNDLED_MODEL_PATH)
        later.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(later)


def model_rates(total: int, rounds: int) -> dict[int, dict[str, float]]:
    """Listings per second per batch size: features + inference, and inference alone."""
    import numpy as np

    scorer = load_onnx_scorer(BUNDLED_MODEL_PATH)
    listings = sample_listings(total)
    results: dict[int, dict[str, float]] = {}
    for size in BATCH_SIZES:
        batches = [listings[i : i + size] for i in range(0, total, size)]
        matrices = [
            np.asarray([listing_features(x) for x in batch], dtype=np.float32) for batch in batches
        ]
        whole, inference = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            for batch in batches:
                scorer.score(batch)
            whole.append(total / (time.perf_counter() - started))
            started = time.perf_counter()
            for matrix in matrices:
                scorer._session.run(["score"], {"features": matrix})
            inference.append(total / (time.perf_counter() - started))
        results[size] = {
            "whole": statistics.median(whole),
            "inference": statistics.median(inference),
        }
    return results


def job_rates(admin: str, pending: int) -> dict[int, float]:
    """Listings per second through score_listings (claim, score, write) per batch size."""
    from functions.score_listings.app import loader, score_listings

    url = fresh_database(admin, DATABASE)
    seed_catalog(url, products=pending, stores=20, seed=5)
    rates: dict[int, float] = {}
    for size in BATCH_SIZES:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE products SET quality_score = NULL, score_attempts = 0, "
                "score_lease_until = NULL, score_source = NULL"
            )
            conn.execute("VACUUM ANALYZE products")
        settings = Settings(database_url=url, scoring_batch_size=size, scoring_max_batches=10**6)

        async def run(settings: Settings) -> float:
            services = Services.from_settings(settings)
            try:
                loader.scorer_for(BUNDLED_MODEL_PATH)  # warm: the model and the pool
                async with services.primary.connection() as conn:
                    await conn.execute("SELECT 1")
                started = time.perf_counter()
                report = await score_listings(services, {})
                return (report["scored"] + report["fallback"]) / (time.perf_counter() - started)
            finally:
                await services.aclose()

        rates[size] = asyncio.run(run(settings))
    return rates


COLD_PROBE = """
import sys, time
started = time.perf_counter()
import importlib
module = importlib.import_module(sys.argv[1])
imported = time.perf_counter()
if sys.argv[2] == "score":
    from edgemart.scoring.model import BUNDLED_MODEL_PATH, load_onnx_scorer
    load_onnx_scorer(BUNDLED_MODEL_PATH)
print((imported - started) * 1000, (time.perf_counter() - started) * 1000)
"""


def cold_start_ms(module: str, mode: str, rounds: int) -> tuple[float, float]:
    """Median (import ms, import + model load ms) over fresh processes."""
    imports, totals = [], []
    env = {**os.environ, "JWT_SECRET": "x" * 32, "PYTHONPATH": "."}
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", COLD_PROBE, module, mode],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.split()
        imports.append(float(out[0]))
        totals.append(float(out[1]))
    return statistics.median(imports), statistics.median(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--listings", type=int, default=4096, help="per model-rate round")
    parser.add_argument("--pending", type=int, default=5000, help="listings the job scores")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()

    cold = {m: cold_start_ms(m, "import", args.rounds) for m in HTTP_FUNCTION_MODULES}
    cold_score = cold_start_ms("functions.score_listings.app", "score", args.rounds)
    first_ms, later_ms = session_init_ms(args.rounds)
    rates = model_rates(args.listings, args.rounds)
    with admin_url() as admin:
        jobs = job_rates(admin, args.pending)

    lines = [
        "# Listing scoring",
        "",
        *provenance(f"python -m bench.scoring.run {' '.join(sys.argv[1:])}"),
        "",
        f"Model: `{BUNDLED_MODEL_PATH.name}` ({BUNDLED_MODEL_PATH.stat().st_size:,} bytes), "
        "onnxruntime CPU, one intra-op thread.",
        "",
        "## Session init",
        "",
        f"- first load in a process (imports onnxruntime and numpy, creates the session, "
        f"checks the signature): **{first_ms:.1f} ms**",
        f"- a later load in the same process (session only): **{later_ms:.1f} ms** "
        f"(median of {args.rounds})",
        "",
        "## Listings scored per second",
        "",
        f"Model alone: {args.listings:,} listings per round, median of {args.rounds} rounds. "
        f"Job: one `score_listings` run over {args.pending:,} pending listings in PostgreSQL "
        "(claim with SKIP LOCKED, score off the event loop, write with one UPDATE per batch).",
        "",
        "| batch size | features + inference | inference alone | whole job (DB round trips) |",
        "|---:|---:|---:|---:|",
        *(
            f"| {size} | {rates[size]['whole']:,.0f} | {rates[size]['inference']:,.0f} | "
            f"{jobs[size]:,.0f} |"
            for size in BATCH_SIZES
        ),
        "",
        f"## Cold start (fresh process, median of {args.rounds})",
        "",
        "| function | import ms | import + model load ms |",
        "|---|---:|---:|",
        *(f"| {m} | {cold[m][0]:.0f} | — |" for m in HTTP_FUNCTION_MODULES),
        f"| functions.score_listings.app | {cold_score[0]:.0f} | {cold_score[1]:.0f} |",
        "",
        "HTTP functions never import onnxruntime or numpy (tests/contract/"
        "test_function_imports.py checks it); score_listings imports them on its first run, "
        "when it loads the model.",
    ]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
