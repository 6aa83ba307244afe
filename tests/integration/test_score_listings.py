"""score_listings against the real database: pending listings get scored, concurrent runs take
disjoint sets, a broken model degrades to the heuristic, a failing listing is retried then
given the fallback score, and nothing is left pending."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from edgemart import metrics
from edgemart.scoring.features import Listing
from edgemart.scoring.model import BUNDLED_MODEL_PATH, ListingScorer
from edgemart.services import Services
from functions.score_listings import app as score_app
from functions.score_listings.app import ScorerLoader, score_listings
from gateway.app import create_gateway
from tests.conftest import open_gateway, settings_for

pytestmark = pytest.mark.anyio
EVENT = json.loads((Path(__file__).parents[1] / "events/eventbridge_scheduled.json").read_text())
SECRET = "scoring-tests-secret-of-at-least-32-bytes"


def query(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def pending_count(url: str) -> int:
    ((count,),) = query(url, "SELECT count(*) FROM products WHERE quality_score IS NULL")
    return int(count)  # type: ignore[call-overload]


def make_pending(url: str, limit: int) -> None:
    """Return `limit` scored listings to the pending state, as if just created."""
    query(
        url,
        "UPDATE products SET quality_score = NULL, score_source = NULL, score_attempts = 0, "
        "score_lease_until = NULL WHERE id IN (SELECT id FROM products ORDER BY id LIMIT %s)",
        [limit],
    )


@pytest.fixture(autouse=True)
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no model loaded in this process."""
    monkeypatch.setattr(score_app, "loader", ScorerLoader())


@pytest.fixture
async def services(catalog_database_url: str) -> AsyncIterator[Services]:
    services = Services.from_settings(settings_for(catalog_database_url, scoring_batch_size=64))
    yield services
    await services.aclose()


@pytest.fixture
def drained(catalog_database_url: str) -> Iterator[str]:
    """The catalog with no listing pending, before and after the test."""
    score_all = "UPDATE products SET quality_score = 40 WHERE quality_score IS NULL"
    query(catalog_database_url, score_all)
    yield catalog_database_url
    query(catalog_database_url, score_all)


async def test_new_listing_is_pending_then_scored_by_one_run(
    catalog_database_url: str, drained: str
) -> None:
    services = Services.from_settings(
        settings_for(catalog_database_url, jwt_secret=SECRET, rate_limit_overrides=())
    )
    now = int(time.time())
    auth = {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "scoring-seller", "iat": now, "exp": now + 600}, SECRET, "HS256")
    }
    async with open_gateway(services, peer=("203.0.113.40", 1), base_url="http://t") as client:
        store = f"score-{uuid.uuid4().hex[:8]}"
        created = await client.post("/stores", json={"slug": store, "name": "S"}, headers=auth)
        assert created.status_code == 201, created.text
        listing = {
            "store_slug": store,
            "category_id": 1,
            "name": "Solid oak desk with two drawers",
            "description": "Hand-finished oak desk, 120 x 60 cm, two soft-close drawers.",
            "price_cents": 24900,
            "stock": 5,
        }
        response = await client.post("/products", json=listing, headers=auth)
        assert response.status_code == 201, response.text
        product_id = response.json()["id"]
        assert response.json()["quality_score"] is None
        report = await score_listings(services, EVENT)
        assert report["scorer"] == "model" and report["claimed"] == report["scored"] == 1
        scored = await client.get(f"/products/{product_id}")
    rows = query(
        catalog_database_url,
        "SELECT quality_score, score_source, score_attempts, score_lease_until FROM products "
        "WHERE id = %s",
        [product_id],
    )
    ((score, source, attempts, lease),) = rows
    assert 0 <= score <= 100  # type: ignore[operator]
    assert (source, attempts, lease) == ("model", 1, None)
    assert pending_count(catalog_database_url) == 0
    assert scored.status_code == 200 and scored.json()["quality_score"] == pytest.approx(score)


async def test_concurrent_runs_score_disjoint_sets(catalog_database_url: str, drained: str) -> None:
    query(catalog_database_url, "UPDATE products SET score_attempts = 0")
    make_pending(catalog_database_url, 500)
    runs = [
        Services.from_settings(settings_for(catalog_database_url, scoring_batch_size=25))
        for _ in range(4)
    ]
    try:
        reports = await asyncio.gather(*(score_listings(s, EVENT) for s in runs))
    finally:
        for services in runs:
            await services.aclose()
    assert sum(report["claimed"] for report in reports) == 500
    # They really overlapped (a slow pool start may leave one run nothing to claim).
    assert sum(1 for report in reports if report["claimed"] > 0) >= 2, reports
    # A listing claimed by two runs would show two attempts.
    assert query(
        catalog_database_url, "SELECT count(*) FROM products WHERE score_attempts > 1"
    ) == [(0,)]
    assert pending_count(catalog_database_url) == 0


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
async def test_broken_model_falls_back_to_heuristic_and_health_says_so(
    catalog_database_url: str, drained: str, tmp_path: Path, broken: str
) -> None:
    model = tmp_path / "model.onnx"
    if broken == "corrupt":
        model.write_bytes(BUNDLED_MODEL_PATH.read_bytes()[:200])
    make_pending(catalog_database_url, 70)
    services = Services.from_settings(settings_for(catalog_database_url, scoring_model_path=model))
    before = metrics.count(metrics.SCORING_MODEL_UNAVAILABLE)
    try:
        report = await score_listings(services, EVENT)
        transport = httpx.ASGITransport(app=create_gateway(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            health = (await client.get("/health")).json()
    finally:
        await services.aclose()
    assert report["scorer"] == "heuristic" and report["scored"] == 70
    assert str(model) in report["degraded_reason"]
    assert metrics.count(metrics.SCORING_MODEL_UNAVAILABLE) == before + 1
    assert pending_count(catalog_database_url) == 0
    assert query(
        catalog_database_url,
        "SELECT count(*) FROM products WHERE score_source = 'heuristic' "
        "AND quality_score BETWEEN 0 AND 100",
    ) == [(70,)]
    assert health["checks"]["scoring"]["ok"] is False
    assert health["checks"]["scoring"]["scorer"] == "heuristic"
    assert str(model) in health["checks"]["scoring"]["degraded_reason"]
    assert health["status"] == "healthy"  # every request is still served


async def test_model_comes_back_on_a_later_run(
    catalog_database_url: str, drained: str, tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    services = Services.from_settings(settings_for(catalog_database_url, scoring_model_path=model))
    try:
        assert (await score_listings(services, EVENT))["scorer"] == "heuristic"
        model.write_bytes(BUNDLED_MODEL_PATH.read_bytes())
        make_pending(catalog_database_url, 3)
        report = await score_listings(services, EVENT)
    finally:
        await services.aclose()
    assert (report["scorer"], report["scored"], report["degraded_reason"]) == ("model", 3, None)
    assert query(catalog_database_url, "SELECT scorer FROM scoring_status") == [("model",)]


class PoisonedScorer:
    """The heuristic, except that a listing named POISON cannot be scored."""

    source = "model"

    def score(self, listings: Sequence[Listing]) -> list[float]:
        if any("POISON" in listing.name for listing in listings):
            raise ValueError("cannot score this listing")
        return [60.0] * len(listings)


class PoisonedLoader(ScorerLoader):
    def scorer_for(self, path: Path) -> tuple[ListingScorer, str | None]:
        return PoisonedScorer(), None


async def test_failing_listing_is_retried_then_given_the_fallback_score(
    catalog_database_url: str,
    drained: str,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(score_app, "loader", PoisonedLoader())
    make_pending(catalog_database_url, 10)
    ((poisoned,),) = query(
        catalog_database_url,
        "UPDATE products SET name = 'POISON pill' WHERE id = "
        "(SELECT id FROM products WHERE quality_score IS NULL ORDER BY id LIMIT 1) RETURNING id",
    )
    first = await score_listings(services, EVENT)
    assert (first["scored"], first["failed"]) == (9, 1)  # the rest of its batch is not lost
    state = "SELECT quality_score, score_attempts, score_lease_until, score_source FROM products "
    assert query(catalog_database_url, state + "WHERE id = %s", [poisoned]) == [
        (None, 1, None, None)
    ]
    for _ in (2, 3):
        report = await score_listings(services, EVENT)
        assert (report["claimed"], report["failed"]) == (1, 1)
    assert query(
        catalog_database_url, "SELECT score_attempts FROM products WHERE id = %s", [poisoned]
    ) == [(3,)]
    last = await score_listings(services, EVENT)
    assert (last["claimed"], last["fallback"], last["failed"]) == (1, 1, 0)
    ((score, attempts, lease, source),) = query(
        catalog_database_url, state + "WHERE id = %s", [poisoned]
    )
    assert 0 <= score <= 100 and (attempts, lease, source) == (4, None, "fallback")  # type: ignore[operator]
    assert pending_count(catalog_database_url) == 0


async def test_listing_claimed_by_a_run_that_died_is_scored_after_its_lease(
    catalog_database_url: str, drained: str, services: Services
) -> None:
    make_pending(catalog_database_url, 5)
    # A run claimed them (lease taken, attempt counted) and died before writing scores.
    query(
        catalog_database_url,
        score_app.CLAIM_SQL.replace("RETURNING", "RETURNING 1, "),
        {"batch": 5, "lease_s": 3600},  # type: ignore[arg-type]
    )
    leased = await score_listings(services, EVENT)
    assert leased["claimed"] == 0 and pending_count(catalog_database_url) == 5
    query(
        catalog_database_url,
        "UPDATE products SET score_lease_until = now() - interval '1 second' "
        "WHERE score_lease_until IS NOT NULL",
    )
    report = await score_listings(services, EVENT)
    assert report["scored"] == 5 and pending_count(catalog_database_url) == 0


async def test_pending_listing_ranks_between_good_and_poor_ones(
    catalog_database_url: str, drained: str
) -> None:
    """Search relevance ties: score 90, then pending (ranked as 50), then score 10."""
    word = f"zq{uuid.uuid4().hex[:8]}"
    ids = {}
    for label, score in (("poor", 10), ("pending", None), ("good", 90)):
        ((ids[label],),) = query(
            catalog_database_url,
            "INSERT INTO products (store_id, category_id, name, description, price_cents, stock, "
            "quality_score) SELECT id, 1, %s, 'same text', 1000, 5, %s FROM stores LIMIT 1 "
            "RETURNING id::text",
            [f"{word} lamp", score],
        )
    services = Services.from_settings(
        settings_for(catalog_database_url, rate_limit_overrides=(("search", 0, 60),))
    )
    try:
        transport = httpx.ASGITransport(app=create_gateway(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/marketplace/search", params={"q": word})
    finally:
        await services.aclose()
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["results"]] == [
        ids["good"],
        ids["pending"],
        ids["poor"],
    ]
