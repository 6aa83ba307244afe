"""Two tenants behind one real Varnish (Debian's `varnish`) with the generated VCL: the edge
keys its objects on the host, so two marketplaces' pages at one path are two objects; a ban or
a PURGE for one tenant drops its copies only; a client cannot make the gateway answer for
another tenant than the host the edge stored the page under.

Tenants are given to requests by host (`tests.support.tenants.TenantsByHost`), as the
resolution middleware does in a multi-tenant deployment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from edgemart.cache import TAGS_HEADER, TENANT_HEADER
from edgemart.changes import Changes, listing_created, popular_searches_changed
from edgemart.edgepurge import URL_HEADER, VarnishPurge
from edgemart.services import Services
from edgemart.tenancy import DEFAULT_TENANT, Tenant
from gateway.app import create_gateway
from tests.conftest import serve_in_thread, settings_for
from tests.support.tenants import ACME, GLOBEX, TenantsByHost
from tests.support.varnish import VARNISHD, varnish

pytestmark = pytest.mark.skipif(
    VARNISHD is None, reason="varnishd not installed (Debian: apt-get install varnish)"
)

HOST_OF = {ACME: "a.example", GLOBEX: "b.example", DEFAULT_TENANT: "localhost"}
TENANTS = (DEFAULT_TENANT, ACME, GLOBEX)


@dataclass(frozen=True)
class Edge:
    url: str
    purge: VarnishPurge
    forwarded_hosts: list[tuple[str, str | None]]
    """The query string and X-Forwarded-Host of each request the gateway received."""


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, catalog_database_url: str) -> Iterator[Edge]:
    services = Services.from_settings(
        settings_for(
            catalog_database_url,
            rate_limit_overrides=tuple((group, 0, 60) for group in ("home", "search", "store")),
        )
    )
    app = TenantsByHost(create_gateway(services), {HOST_OF[ACME]: ACME, HOST_OF[GLOBEX]: GLOBEX})
    forwarded_hosts: list[tuple[str, str | None]] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            forwarded = dict(scope["headers"]).get(b"x-forwarded-host")
            forwarded_hosts.append(
                (scope["query_string"].decode(), forwarded.decode() if forwarded else None)
            )
        await app(scope, receive, send)

    with serve_in_thread(recording) as backend:
        process, edge_url = varnish(tmp_path_factory.mktemp("edge"), int(backend.rsplit(":", 1)[1]))
        purge = VarnishPurge(edge_url)
        try:
            yield Edge(edge_url, purge, forwarded_hosts)
        finally:
            purge.close()
            process.terminate()
            process.communicate(timeout=10)


def get(edge: Edge, tenant: Tenant | str, path: str, **headers: str) -> httpx.Response:
    host = tenant if isinstance(tenant, str) else HOST_OF[tenant]
    response = httpx.get(edge.url + path, headers={"Host": host, **headers}, timeout=10)
    assert response.status_code == 200, response.text
    assert not {TAGS_HEADER, TENANT_HEADER, URL_HEADER} & set(response.headers)
    return response


def cache_states(edge: Edge, path: str) -> dict[str, str]:
    return {tenant.slug: get(edge, tenant, path).headers["x-cache"] for tenant in TENANTS}


def cached_for_every_tenant(edge: Edge, path: str) -> None:
    for tenant in TENANTS:
        get(edge, tenant, path)
    assert cache_states(edge, path) == {tenant.slug: "HIT" for tenant in TENANTS}


def banned(edge: Edge, changes: Changes) -> None:
    edge.purge.purge(changes)
    assert edge.purge.flush()


def test_two_tenants_pages_at_one_path_are_two_objects(edge: Edge) -> None:
    path = f"/marketplace/search?q=zq{uuid.uuid4().hex[:6]}"
    first = {tenant.slug: get(edge, tenant, path).headers["x-cache"] for tenant in TENANTS}
    assert first == {tenant.slug: "MISS" for tenant in TENANTS}  # none was another's
    assert cache_states(edge, path) == {tenant.slug: "HIT" for tenant in TENANTS}
    # The host's case and port do not make another object (nor another tenant).
    assert get(edge, "A.Example:8080", path).headers["x-cache"] == "HIT"


def test_a_tenant_s_ban_by_url_drops_its_copies_only(edge: Edge) -> None:
    path = "/marketplace/search/popular"
    cached_for_every_tenant(edge, path)
    banned(edge, popular_searches_changed(tenant=ACME))
    assert cache_states(edge, path) == {"default": "HIT", "acme": "MISS", "globex": "HIT"}
    banned(edge, popular_searches_changed())  # the default tenant's
    assert cache_states(edge, path) == {"default": "MISS", "acme": "HIT", "globex": "HIT"}

    search = f"/marketplace/search?q=zq{uuid.uuid4().hex[:6]}"
    cached_for_every_tenant(edge, search)
    banned(edge, listing_created("shop", tenant=GLOBEX))  # every search page of globex's
    assert cache_states(edge, search) == {"default": "HIT", "acme": "HIT", "globex": "MISS"}


def test_a_purge_names_one_host_s_copy(edge: Edge) -> None:
    path = f"/marketplace/search?q=zq{uuid.uuid4().hex[:6]}"
    cached_for_every_tenant(edge, path)
    purged = httpx.request("PURGE", edge.url + path, headers={"Host": HOST_OF[ACME]}, timeout=10)
    assert purged.status_code == 200
    assert cache_states(edge, path) == {"default": "HIT", "acme": "MISS", "globex": "HIT"}


def test_the_gateway_is_told_the_host_the_edge_stored_the_page_under(edge: Edge) -> None:
    """A client's own X-Forwarded-Host never reaches the gateway: were the gateway to trust
    the edge's, it would resolve the tenant the object is stored for, not the one asked."""
    path = f"/marketplace/search?q=zq{uuid.uuid4().hex[:6]}"
    get(edge, ACME, path, **{"X-Forwarded-Host": HOST_OF[GLOBEX]})
    query = path.split("?", 1)[1]  # (other tests' background fetches may come in between)
    assert [host for asked, host in edge.forwarded_hosts if asked == query] == [HOST_OF[ACME]]
