"""edgemart.ratelimit.gate: the rate limiter as the request-context middleware's gate, with
the real memory limiter and, for the shared path, real Redis."""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Scope

from edgemart.ratelimit.gate import RateLimitGate, SubjectResolver
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.policies import RateLimitTable
from edgemart.ratelimit.window import Policy
from edgemart.requestcontext import RESPONSE_HEADERS_KEY
from edgemart.services import Services
from edgemart.settings import IPNetwork, Settings
from tests.conftest import FakeClock
from tests.unit.test_ratelimit_policies import route
from tests.unit.test_requestcontext import http_scope

SEARCH = Policy("search", 2, 60)
LISTINGS = Policy("listings", 1, 60, "user")
ODD = Policy("50%off", 5, 60)


TABLE = RateLimitTable(
    {policy.name: policy for policy in (SEARCH, LISTINGS, ODD)},
    [
        route("GET", "/marketplace/search", "search"),
        route("PATCH", "/products/{product_id}", "listings"),
        route("GET", "/deals", "50%off"),
        route("GET", "/health", None),
    ],
)


def app_with(services: Services) -> Starlette:
    app = Starlette()
    app.state.services = services
    return app


def memory_app(clock: FakeClock) -> Starlette:
    services = Services.from_settings(Settings())
    return app_with(dataclasses.replace(services, rate_limiter=MemoryRateLimiter(clock=clock)))


def scope_for(
    app: Starlette,
    path: str = "/marketplace/search",
    *,
    method: str = "GET",
    peer: str = "203.0.113.9",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    return {
        **http_scope(method, path, headers, peer=peer),
        "app": app,
        "state": {RESPONSE_HEADERS_KEY: []},
    }


def gate_for(
    subject_of: SubjectResolver | None = None, trusted: tuple[IPNetwork, ...] = ()
) -> RateLimitGate:
    return RateLimitGate(table=TABLE, trusted_proxies=trusted, subject_of=subject_of)


def queued(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = scope["state"][RESPONSE_HEADERS_KEY]
    return headers


def test_admitted_requests_queue_both_headers_and_their_outcome() -> None:
    clock = FakeClock()
    app, gate = memory_app(clock), gate_for()
    first = scope_for(app)
    assert gate(first) is None  # the memory limiter decides at once: no awaitable
    clock.now += 10
    second = scope_for(app)
    assert gate(second) is None
    assert queued(first) == [
        (b"ratelimit-policy", b'"search";q=2;w=60'),
        (b"ratelimit", b'"search";r=1;t=60'),
    ]
    assert queued(second)[1] == (b"ratelimit", b'"search";r=0;t=50')
    assert first["state"]["rate_limit"] == second["state"]["rate_limit"] == "search:ok"


def test_over_the_limit_the_gate_answers_429_itself() -> None:
    clock = FakeClock()
    app, gate = memory_app(clock), gate_for()
    for _ in range(2):
        gate(scope_for(app))
        clock.now += 10
    refused_scope = scope_for(app)
    refusal = gate(refused_scope)
    assert isinstance(refusal, Response)
    assert refusal.status_code == 429
    assert refusal.headers["retry-after"] == "40"
    assert refusal.headers["ratelimit-policy"] == '"search";q=2;w=60'
    assert refusal.headers["ratelimit"] == '"search";r=0;t=40'
    assert refusal.headers["content-type"] == "application/problem+json"
    body = json.loads(bytes(refusal.body))
    assert body["code"] == "rate_limited"
    assert body["detail"] == "Limit of 2 requests per 60 s reached; retry in 40 s"
    assert refused_scope["state"]["rate_limit"] == "search:limited"
    assert queued(refused_scope) == []  # the refusal carries its own headers


def test_unlimited_routes_pass_untouched() -> None:
    app, gate = memory_app(FakeClock()), gate_for()
    scope = scope_for(app, "/health")
    assert gate(scope) is None
    assert queued(scope) == []
    assert "rate_limit" not in scope["state"]


def test_each_client_address_has_its_own_quota() -> None:
    app, gate = memory_app(FakeClock()), gate_for()
    for _ in range(2):
        assert gate(scope_for(app, peer="203.0.113.1")) is None
    assert isinstance(gate(scope_for(app, peer="203.0.113.1")), Response)
    assert gate(scope_for(app, peer="203.0.113.2")) is None


def subject_header(scope: Scope) -> str | None:
    """Stands in for the verified token subject: whatever the scope names as its user."""
    for name, value in scope["headers"]:
        if name == b"x-user":
            return str(value.decode())
    return None


def test_user_groups_are_keyed_by_the_verified_subject() -> None:
    gate = gate_for(subject_of=subject_header)
    app = memory_app(FakeClock())
    alice = scope_for(app, headers=[(b"x-user", b"alice")])
    assert gate.identity(alice, LISTINGS) == "user:alice"
    assert gate.identity(alice, SEARCH) == "ip:203.0.113.9"  # IP groups ignore the user
    assert gate.identity(scope_for(app), LISTINGS) == "ip:203.0.113.9"  # no subject: by IP
    assert gate_for().identity(alice, LISTINGS) == "ip:203.0.113.9"  # no resolver: by IP

    def patch(user: bytes) -> Response | None | Awaitable[Response | None]:
        return gate(scope_for(app, "/products/7", method="PATCH", headers=[(b"x-user", user)]))

    assert patch(b"alice") is None
    assert isinstance(patch(b"alice"), Response)
    assert patch(b"bob") is None  # same address, another user: another quota


def test_forwarded_addresses_count_only_from_trusted_proxies() -> None:
    gate = gate_for(trusted=(ipaddress.ip_network("10.0.0.0/8"),))
    app = memory_app(FakeClock())
    forwarded = [(b"x-forwarded-for", b"198.51.100.7")]
    via_proxy = scope_for(app, peer="10.1.2.3", headers=forwarded)
    assert gate.identity(via_proxy, SEARCH) == "ip:198.51.100.7"
    direct = scope_for(app, peer="203.0.113.5", headers=forwarded)
    assert gate.identity(direct, SEARCH) == "ip:203.0.113.5"


def test_a_policy_name_is_quoted_verbatim_in_its_headers() -> None:
    app, gate = memory_app(FakeClock()), gate_for()
    scope = scope_for(app, "/deals")
    assert gate(scope) is None
    assert queued(scope) == [
        (b"ratelimit-policy", b'"50%off";q=5;w=60'),
        (b"ratelimit", b'"50%off";r=4;t=60'),
    ]
    assert scope["state"]["rate_limit"] == "50%off:ok"


@pytest.fixture
async def redis_services(redis_url: str) -> AsyncIterator[Services]:
    settings = Settings(
        redis_url=redis_url,
        rate_limit_overrides=(("search", 2, 60),),
        rate_limit_timeout_ms=2000,
    )
    services = Services.from_settings(settings)
    yield services
    await services.aclose()


async def resolve(outcome: Response | None | Awaitable[Response | None]) -> Response | None:
    assert inspect.isawaitable(outcome)  # a shared backend has to be waited for
    return await outcome


@pytest.mark.anyio
async def test_a_shared_backend_decides_through_an_awaitable(redis_services: Services) -> None:
    app, gate = app_with(redis_services), gate_for()
    peer = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    first = scope_for(app, peer=peer)
    assert await resolve(gate(first)) is None
    assert queued(first)[0] == (b"ratelimit-policy", b'"search";q=2;w=60')
    assert queued(first)[1][1].startswith(b'"search";r=1;t=')
    assert first["state"]["rate_limit"] == "search:ok"
    assert await resolve(gate(scope_for(app, peer=peer))) is None
    refused_scope = scope_for(app, peer=peer)
    refusal = await resolve(gate(refused_scope))
    assert isinstance(refusal, Response) and refusal.status_code == 429
    assert refused_scope["state"]["rate_limit"] == "search:limited"


@pytest.mark.anyio
async def test_an_unreachable_shared_backend_falls_back_and_says_so() -> None:
    # Nothing listens on port 1: every check fails over to the process's own limiter.
    services = Services.from_settings(Settings(redis_url="redis://127.0.0.1:1/0"))
    try:
        app, gate = app_with(services), gate_for()
        scope = scope_for(app)
        assert await resolve(gate(scope)) is None
        assert scope["state"]["rate_limit"] == "search:ok:fallback"
        assert queued(scope)[1][0] == b"ratelimit"
    finally:
        await services.aclose()


# ---- Tenants (decision 0043) ----


def test_a_client_in_one_tenant_is_another_client_in_another() -> None:
    from edgemart.tenancy import TENANT_STATE_KEY
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME, GLOBEX

    app = memory_app(FakeClock())
    gate = gate_for(subject_of=lambda scope: "buyer-1")

    def in_tenant(scope: dict[str, Any], tenant: Any) -> dict[str, Any]:
        scope["state"][TENANT_STATE_KEY] = tenant
        return scope

    default_scope = scope_for(app, "/products/p", method="PATCH")
    acme_scope = in_tenant(scope_for(app, "/products/p", method="PATCH"), ACME)
    assert gate.identity(default_scope, LISTINGS) == "user:buyer-1"  # as before tenancy
    assert gate.identity(acme_scope, LISTINGS) == scoped(ACME, "user:buyer-1")
    assert gate.identity(in_tenant(scope_for(app), ACME), SEARCH) == scoped(ACME, "ip:203.0.113.9")
    # LISTINGS admits one request a minute: buyer-1 spent it in acme, not in globex.
    assert gate(acme_scope) is None
    refused = gate(in_tenant(scope_for(app, "/products/p", method="PATCH"), ACME))
    assert isinstance(refused, Response) and refused.status_code == 429
    globex_scope = in_tenant(scope_for(app, "/products/p", method="PATCH"), GLOBEX)
    assert gate(globex_scope) is None
    # The same address, the search group (per tenant per IP), likewise.
    for _ in range(SEARCH.limit):
        assert gate(in_tenant(scope_for(app), ACME)) is None
    assert gate(in_tenant(scope_for(app), ACME)) is not None
    assert gate(in_tenant(scope_for(app), GLOBEX)) is None
