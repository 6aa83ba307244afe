"""score_listings (scheduled every minute): score listings pending verification.

Each batch is claimed in one statement (`FOR UPDATE SKIP LOCKED`), which also counts the
attempt and sets a lease, so concurrent runs take disjoint listings and a run that dies
leaves nothing stuck: its leases expire and the listings are claimed again. Scores are
written in a second statement. A listing that cannot be scored is released for the next
run; once it has used `SCORING_MAX_ATTEMPTS` claims it gets the heuristic score with
`score_source = 'fallback'` (flagged for review). If the model cannot be loaded, every
listing gets the heuristic score (`score_source = 'heuristic'`), the reason is logged,
counted and reported by /health through `scoring_status`, and loading is tried again on the
next run. docs/scoring.md documents the model and the heuristic.

Tenant by tenant (docs/decisions/0040): each claim and each write is a transaction in its
tenant, and each tenant gets up to `SCORING_MAX_BATCHES` batches a run. `scoring_status` is
the deployment's (which scorer loaded), not a tenant's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from edgemart import metrics
from edgemart.db import Connection
from edgemart.jobs import JobRunner
from edgemart.logging import logger
from edgemart.scoring.features import Listing, heuristic_score
from edgemart.scoring.model import (
    BUNDLED_MODEL_PATH,
    HeuristicScorer,
    ListingScorer,
    ModelLoadError,
    OnnxListingScorer,
    clip_score,
    load_onnx_scorer,
    score_isolating_failures,
)
from edgemart.services import Services
from edgemart.settings import Settings
from edgemart.tenancy import in_tenant
from edgemart.tenantloop import tenant_ids

NEUTRAL_SCORE = 50.0

CLAIM_SQL = """
WITH claimable AS (
    SELECT id FROM products
    WHERE quality_score IS NULL AND (score_lease_until IS NULL OR score_lease_until < now())
    ORDER BY created_at, id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
UPDATE products p
SET score_attempts = least(p.score_attempts + 1, 32767),
    score_lease_until = now() + %(lease_s)s * interval '1 second'
FROM claimable
WHERE p.id = claimable.id
RETURNING p.id, p.name, p.description, p.price_cents, p.stock, p.score_attempts,
    (SELECT c.median_price_cents FROM category_counts c
     WHERE c.tenant_id = p.tenant_id AND c.id = p.category_id)
        AS category_median_price_cents,
    (SELECT s.rating FROM stores s
     WHERE s.tenant_id = p.tenant_id AND s.id = p.store_id)::float8 AS store_rating
"""

WRITE_SQL = """
UPDATE products p
SET quality_score = scored.score, score_source = scored.source, scored_at = now(),
    score_lease_until = NULL
FROM unnest(%s::uuid[], %s::real[], %s::text[]) AS scored (id, score, source)
WHERE p.id = scored.id AND p.quality_score IS NULL
"""

RELEASE_SQL = """
UPDATE products SET score_lease_until = NULL WHERE id = ANY(%s) AND quality_score IS NULL
"""

STATUS_SQL = """
INSERT INTO scoring_status (id, scorer, model_path, degraded_reason, last_run_at)
VALUES (1, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE SET scorer = excluded.scorer, model_path = excluded.model_path,
    degraded_reason = excluded.degraded_reason, last_run_at = excluded.last_run_at
"""


class ScorerLoader:
    """The process's scorer: the model, loaded once and reused; else the heuristic, with
    the reason, until a later run loads the model."""

    def __init__(self) -> None:
        self._model: OnnxListingScorer | None = None

    def scorer_for(self, path: Path) -> tuple[ListingScorer, str | None]:
        if self._model is not None and self._model.path == path:
            return self._model, None
        try:
            self._model = load_onnx_scorer(path)
        except ModelLoadError as exc:
            self._model = None
            metrics.record(metrics.SCORING_MODEL_UNAVAILABLE)
            logger.error("score_listings: using the heuristic scorer: %s", exc)
            return HeuristicScorer(), str(exc)
        logger.info("score_listings: loaded model %s", path)
        return self._model, None


loader = ScorerLoader()


def fallback_score(listing: Listing) -> float:
    """The score a listing gets once its attempts are used up: the heuristic's, or the
    neutral middle if even the heuristic cannot read it."""
    try:
        return clip_score(heuristic_score(listing))
    except Exception:  # a listing the heuristic cannot read still leaves the queue
        return NEUTRAL_SCORE


def listing_of(row: Mapping[str, Any]) -> Listing:
    median = row["category_median_price_cents"]
    return Listing(
        name=row["name"],
        description=row["description"],
        price_cents=row["price_cents"],
        category_median_price_cents=None if median is None else int(median),
        stock=row["stock"],
        store_rating=row["store_rating"],
    )


async def score_listings(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    settings = services.settings
    path = settings.scoring_model_path or BUNDLED_MODEL_PATH
    scorer, degraded_reason = loader.scorer_for(path)
    report: dict[str, Any] = {
        "scorer": scorer.source,
        "degraded_reason": degraded_reason,
        "claimed": 0,
        "scored": 0,
        "fallback": 0,
        "failed": 0,
    }
    async with services.primary.connection() as conn:
        for tenant in await tenant_ids(conn):
            await _score_tenant(conn, tenant, scorer, settings, report)
        await conn.execute(STATUS_SQL, [scorer.source, str(path), degraded_reason])
    metrics.record(metrics.LISTINGS_SCORED, report["scored"], scorer=scorer.source)
    metrics.record(metrics.SCORING_FALLBACKS, report["fallback"])
    metrics.record(metrics.SCORING_FAILURES, report["failed"])
    if report["fallback"]:
        logger.warning("score_listings: %d listings given the fallback score", report["fallback"])
    logger.info("score_listings: %s", report)
    return report


async def _score_tenant(
    conn: Connection,
    tenant: UUID,
    scorer: ListingScorer,
    settings: Settings,
    report: dict[str, Any],
) -> None:
    """Up to `scoring_max_batches` batches of one tenant's pending listings: each claim and
    each write its own transaction in the tenant (the lease commits before scoring)."""
    for _ in range(settings.scoring_max_batches):
        async with in_tenant(conn, tenant):
            rows = await (
                await conn.execute(
                    CLAIM_SQL,
                    {"batch": settings.scoring_batch_size, "lease_s": settings.scoring_lease_s},
                )
            ).fetchall()
        if not rows:
            break
        outcome = await _score_batch(scorer, rows, settings.scoring_max_attempts)
        async with in_tenant(conn, tenant):
            await conn.execute(WRITE_SQL, outcome.columns())
            if outcome.failed:
                await conn.execute(RELEASE_SQL, [outcome.failed])
        report["claimed"] += len(rows)
        report["scored"] += len(outcome.ids) - outcome.fallbacks
        report["fallback"] += outcome.fallbacks
        report["failed"] += len(outcome.failed)
        if len(rows) < settings.scoring_batch_size:
            break


class BatchOutcome:
    """What one claimed batch came to: scores to write, ids to release."""

    def __init__(self) -> None:
        self.ids: list[Any] = []
        self.scores: list[float] = []
        self.sources: list[str] = []
        self.failed: list[Any] = []
        self.fallbacks = 0

    def add(self, listing_id: Any, score: float, source: str) -> None:
        self.ids.append(listing_id)
        self.scores.append(score)
        self.sources.append(source)
        self.fallbacks += source == "fallback"

    def columns(self) -> list[list[Any]]:
        return [self.ids, self.scores, self.sources]


async def _score_batch(
    scorer: ListingScorer, rows: Sequence[Mapping[str, Any]], max_attempts: int
) -> BatchOutcome:
    outcome = BatchOutcome()
    to_score: list[tuple[Any, Listing]] = []
    for row in rows:
        listing = _listing_or_none(row)
        if row["score_attempts"] > max_attempts:
            fallback = fallback_score(listing) if listing else NEUTRAL_SCORE
            outcome.add(row["id"], fallback, "fallback")
        elif listing is None:
            outcome.failed.append(row["id"])
        else:
            to_score.append((row["id"], listing))
    # Features and inference are CPU work: off the event loop, so the gateway keeps serving.
    scores = await asyncio.to_thread(
        score_isolating_failures, scorer, [listing for _, listing in to_score]
    )
    for (listing_id, _), score in zip(to_score, scores, strict=True):
        if score is None:
            outcome.failed.append(listing_id)
        else:
            outcome.add(listing_id, score, scorer.source)
    return outcome


def _listing_or_none(row: Mapping[str, Any]) -> Listing | None:
    try:
        return listing_of(row)
    except (TypeError, ValueError):
        return None


runner = JobRunner(score_listings)
handler = runner.handler
