"""Edge purging against a real Varnish (Debian's `varnish`) in front of the gateway: a write
made through the edge is served new by the edge within a second of its commit, however long
the page would otherwise live there, and only the purgers' addresses may BAN or PURGE.

The gateway's `Services.edge_purge` is a `VarnishPurge` pointed at the edge once both run
(the edge's port is known only then); `Services.invalidate` hands it each write's changes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgemart import metrics
from edgemart.cache import TAGS_HEADER
from edgemart.changes import product_tag, store_tag
from edgemart.edgepurge import BAN_HEADER, URL_HEADER, VarnishPurge, build_edge_purge
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import serve_in_thread, settings_for
from tests.support.listings import new_listing
from tests.support.purchases import fund
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth, headers
from tests.support.varnish import VARNISHD, varnish

pytestmark = pytest.mark.skipif(
    VARNISHD is None, reason="varnishd not installed (Debian: apt-get install varnish)"
)

OWNER = "edge-owner"
BUYER = "edge-buyer"
FRESH_WITHIN_S = 1.0
"""The promise: a change is at the edge within a second of its commit."""
ELSEWHERE = "127.0.0.2"
"""A loopback address that is not in the edge's default ACL (which holds 127.0.0.1 and ::1)."""


@dataclass(frozen=True)
class Edge:
    url: str
    backend: str
    services: Services


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, catalog_database_url: str) -> Iterator[Edge]:
    """A gateway behind Varnish, both this module's."""
    services = Services.from_settings(
        settings_for(
            catalog_database_url,
            jwt_secret=SECRET,
            cursor_secret="s",
            rate_limit_overrides=tuple(
                (group, 0, 60) for group in ("search", "store", "listings", "purchases")
            ),
        )
    )
    with serve_in_thread(create_gateway(services)) as backend:
        process, edge_url = varnish(tmp_path_factory.mktemp("edge"), int(backend.rsplit(":", 1)[1]))
        try:
            yield Edge(edge_url, backend, services)
        finally:
            process.terminate()
            process.communicate(timeout=10)


@pytest.fixture
def purging(edge: Edge) -> Iterator[VarnishPurge]:
    """The gateway purges the edge after each write, as with EDGE_PURGE=varnish."""
    purge = build_edge_purge(
        dataclasses.replace(edge.services.settings, edge_purge="varnish", edge_purge_url=edge.url)
    )
    assert isinstance(purge, VarnishPurge)
    edge.services.edge_purge = purge
    yield purge
    edge.services.edge_purge = None
    purge.close()


def listed(client: httpx.Client, word: str, stock: int) -> tuple[str, str]:
    """A new listing, through the edge, in a store of its own: (product id, store slug)."""
    return new_listing(
        client, auth(OWNER), slug_prefix="edge", name=f"{word} vase", price_cents=700, stock=stock
    )


def cached(client: httpx.Client, paths: list[str]) -> None:
    """Each page stored at the edge: its second GET is a hit, with the tags stripped."""
    for path in paths:
        client.get(path)
        again = client.get(path)
        assert (again.status_code, again.headers["x-cache"]) == (200, "HIT"), path
        assert TAGS_HEADER not in again.headers and URL_HEADER not in again.headers


def tags_sent(backend: str, path: str) -> set[str]:
    """The tags the gateway itself sends with a page (what the edge stores and strips)."""
    return set(httpx.get(backend + path, timeout=10).headers[TAGS_HEADER].split(" "))


Show = Callable[[Any], object]


def fresh_after(
    client: httpx.Client, since: float, pages: dict[str, tuple[Show, object]]
) -> dict[str, float]:
    """Seconds from `since` until the edge serves each page showing what it should; fails
    once FRESH_WITHIN_S has passed with a page still showing something else."""
    delays: dict[str, float] = {}
    deadline = since + FRESH_WITHIN_S
    while len(delays) < len(pages):
        for path, (show, expected) in pages.items():
            if path not in delays and show(client.get(path).json()) == expected:
                delays[path] = time.monotonic() - since
        if time.monotonic() > deadline and len(delays) < len(pages):
            stale = {path: show(client.get(path).json()) for path in pages if path not in delays}
            pytest.fail(f"still stale at the edge {FRESH_WITHIN_S} s after the write: {stale}")
        time.sleep(0.01)
    return delays


def in_stock_of(product: str) -> Show:
    def show(document: Any) -> object:
        listed = document.get("products", document.get("results"))
        return {p["id"]: p["in_stock"] for p in listed if p["id"] == product}

    return show


def sold_count_of(product: str) -> Show:
    def show(document: Any) -> object:
        listed = document.get("products", document.get("results"))
        return {p["id"]: p["sold_count"] for p in listed if p["id"] == product}

    return show


def cached_listing(client: httpx.Client, stock: int) -> tuple[str, str, tuple[str, str, str]]:
    """A new listing with its product page, its store's page and a search finding it, each
    cached at the edge: (product id, store slug, (page, store page, search))."""
    word = f"zq{uuid.uuid4().hex[:6]}"
    product, slug = listed(client, word, stock=stock)
    pages = (f"/products/{product}", f"/stores/{slug}", f"/marketplace/search?q={word}")
    cached(client, list(pages))
    return product, slug, pages


def test_a_listing_edit_through_the_edge_is_served_new_within_a_second(
    edge: Edge, purging: VarnishPurge
) -> None:
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        product, slug, (page, store, search) = cached_listing(client, stock=3)
        assert tags_sent(edge.backend, store) == {product_tag(product), store_tag(slug)}
        assert purging.flush()  # the listing's own purges are done
        before = metrics.count(metrics.EDGE_PURGES, backend="varnish", result="ok")

        sent = time.monotonic()
        patched = client.patch(page, json={"stock": 0}, headers=auth(OWNER))
        assert patched.status_code == 200, patched.text
        delays = fresh_after(
            client,
            sent,
            {
                page: (lambda d: (d["stock_available"], d["in_stock"]), (0, False)),
                store: (in_stock_of(product), {product: False}),
                search: (in_stock_of(product), {product: False}),
            },
        )
        print(f"\nlisting edit: fresh at the edge after {delays} (s from the PATCH)")
        assert purging.flush()
        # A ban per changed tag and one for every search: product, store, search prefix.
        assert metrics.count(metrics.EDGE_PURGES, backend="varnish", result="ok") == before + 3


def test_a_purchase_through_the_edge_is_served_new_within_a_second(
    edge: Edge, purging: VarnishPurge, catalog_database_url: str
) -> None:
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        product, slug, (page, store, search) = cached_listing(client, stock=5)
        fund(catalog_database_url, BUYER, 100_000)

        sent = time.monotonic()
        bought = client.post(
            "/purchases", json={"product_id": product, "quantity": 2}, headers=headers(BUYER)
        )
        assert bought.status_code == 201, bought.text
        delays = fresh_after(
            client,
            sent,
            {
                page: (lambda d: d["stock_available"], 3),
                store: (sold_count_of(product), {product: 2}),
                search: (sold_count_of(product), {product: 2}),
            },
        )
        print(f"\npurchase: fresh at the edge after {delays} (s from the POST)")


def test_only_purgers_may_ban_or_purge(edge: Edge, catalog_database_url: str) -> None:
    edge_url = edge.url
    (product,) = sql(
        catalog_database_url, "SELECT id::text FROM products WHERE is_available LIMIT 1"
    )[0]
    page = f"/products/{product}"
    ban = {BAN_HEADER: f"obj.http.{TAGS_HEADER} ~ {product_tag(product)}"}
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        cached(client, [page])

        elsewhere = httpx.HTTPTransport(local_address=ELSEWHERE)
        with httpx.Client(base_url=edge_url, timeout=10, transport=elsewhere) as outsider:
            assert outsider.request("BAN", "/", headers=ban).status_code == 403
            assert outsider.request("PURGE", page).status_code == 403
            assert outsider.get(page).headers["x-cache"] == "HIT"  # the outsider may read
        assert client.get(page).headers["x-cache"] == "HIT"  # nothing was dropped

        # From loopback: a ban on anything but the stored tags or URL is refused too.
        refused = client.request("BAN", "/", headers={BAN_HEADER: "req.url ~ ."})
        assert refused.status_code == 400
        assert client.get(page).headers["x-cache"] == "HIT"

        assert client.request("BAN", "/", headers=ban).status_code == 200
        assert client.get(page).headers["x-cache"] == "MISS"
        assert client.get(page).headers["x-cache"] == "HIT"
        assert client.request("PURGE", page).status_code == 200
        assert client.get(page).headers["x-cache"] == "MISS"
        assert client.request("PURGE", "/wallet").status_code == 404  # never cached


def test_an_address_given_to_edge_vcl_may_ban(tmp_path: Path, edge: Edge) -> None:
    """The same gateway behind a second Varnish whose VCL lets 127.0.0.2 ban too."""
    process, edge_url = varnish(
        tmp_path, int(edge.backend.rsplit(":", 1)[1]), purgers=[ipaddress.ip_network(ELSEWHERE)]
    )
    try:
        elsewhere = httpx.HTTPTransport(local_address=ELSEWHERE)
        with httpx.Client(base_url=edge_url, timeout=10, transport=elsewhere) as client:
            cached(client, ["/marketplace/home"])
            ban = {BAN_HEADER: f"obj.http.{URL_HEADER} ~ ^/marketplace/home$"}
            assert client.request("BAN", "/", headers=ban).status_code == 200
            assert client.get("/marketplace/home").headers["x-cache"] == "MISS"
    finally:
        process.terminate()
        process.communicate(timeout=10)
