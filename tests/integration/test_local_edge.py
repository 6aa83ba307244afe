"""The gateway behind a real Varnish (Debian's `varnish`), configured by the VCL generated from
the cache rules: hits, stale-while-revalidate, stale-if-error with the gateway stopped, and
never a cached purchase.

Waiting out a 60 s s-maxage would make a slow test, so the gateway is wrapped to send an
`Age` header on two routes, as a response that already sat in an upstream cache would:
Varnish then starts the object's clock that far along, and everything after is real time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgemart.cache import CACHE_RULES
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import serve_in_thread, settings_for
from tests.support.varnish import VARNISHD, varnish

pytestmark = pytest.mark.skipif(
    VARNISHD is None, reason="varnishd not installed (Debian: apt-get install varnish)"
)

HOME = CACHE_RULES["home"]
PRODUCT = CACHE_RULES["product_page"]


class AgedResponses:
    """Adds `Age` to responses of chosen paths (seconds already spent in an upstream cache)."""

    def __init__(self, app: ASGIApp, ages: dict[str, int]) -> None:
        self.app = app
        self.ages = ages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        age = self.ages.get(scope.get("path", "")) if scope["type"] == "http" else None

        async def send_aged(message: Message) -> None:
            if age is not None and message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Age"] = str(age)
            await send(message)

        await self.app(scope, receive, send_aged if age is not None else send)


@pytest.fixture
def gateway_services(catalog_database_url: str) -> Iterator[Services]:
    yield Services.from_settings(
        settings_for(
            catalog_database_url,
            rate_limit_overrides=tuple((g, 0, 60) for g in ("home", "store", "purchases")),
        )
    )


def test_gateway_behind_varnish(
    tmp_path: Path, gateway_services: Services, catalog_database_url: str
) -> None:
    import psycopg

    with psycopg.connect(catalog_database_url) as conn:
        row = conn.execute("SELECT id::text FROM products WHERE is_available LIMIT 1").fetchone()
    assert row is not None
    product_path = f"/products/{row[0]}"
    app = AgedResponses(
        create_gateway(gateway_services),
        {
            # Two seconds of freshness left.
            "/marketplace/home": HOME.s_maxage - 2,
            # Expired, and one second from the end of stale-while-revalidate.
            product_path: PRODUCT.s_maxage + PRODUCT.stale_while_revalidate - 1,
        },
    )
    server = serve_in_thread(app)
    backend = server.__enter__()
    process, edge = varnish(tmp_path, int(backend.rsplit(":", 1)[1]))
    try:
        with httpx.Client(base_url=edge, timeout=10) as client:
            # A second GET of a cacheable route is a hit: same response, same request id.
            first = client.get("/marketplace/home")
            second = client.get("/marketplace/home")
            assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
            assert second.headers["x-cache"] == "HIT"
            assert second.headers["x-request-id"] == first.headers["x-request-id"]
            assert "s-maxage=60" in second.headers["cache-control"]

            # Purchases, wallet and health are never cached.
            for method, path in (("POST", "/purchases"), ("GET", "/wallet"), ("GET", "/health")):
                ids = {client.request(method, path).headers["x-request-id"] for _ in range(2)}
                assert len(ids) == 2, (method, path)

            # Expired but within stale-while-revalidate: served at once from the stale copy,
            # refreshed in the background, fresh on the next request.
            time.sleep(2.5)
            stale = client.get("/marketplace/home")
            assert stale.headers["x-request-id"] == first.headers["x-request-id"]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                refreshed = client.get("/marketplace/home")
                if refreshed.headers["x-request-id"] != first.headers["x-request-id"]:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the stale copy was never revalidated")

            # The product page, one second from the end of its revalidation window.
            cached_product = client.get(product_path)
            assert cached_product.status_code == 200

            # Gateway stopped: once the health probe fails, cached routes are served within
            # stale-if-error even past stale-while-revalidate; uncached routes fail.
            server.__exit__(None, None, None)
            time.sleep(3.5)  # > probe window: the backend is marked sick
            during = client.get(product_path)
            assert during.status_code == 200
            assert during.headers["x-request-id"] == cached_product.headers["x-request-id"]
            assert client.get("/marketplace/home").status_code == 200
            assert client.get("/health").status_code == 503
    finally:
        process.terminate()
        process.communicate(timeout=10)
        server.__exit__(None, None, None)  # a no-op when already stopped
