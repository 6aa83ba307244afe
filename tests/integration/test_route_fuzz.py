"""A bounded property-based fuzz of every route: hostile text in every path parameter, query
parameter, body field and header the routes read, and hostile token claims. Whatever arrives,
the answer is never a 5xx, its status is one `/openapi.json` lists for the route, and every
refusal is a problem+json document whose `code` the document lists for that status.

The routes come from the route table (`edgemart.routetable`), so a new route is fuzzed without
being listed here. Examples are derandomised: CI runs the same cases every time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemart import openapi
from edgemart.routetable import ROUTES
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import settings_for

SECRET = "route-fuzz-secret-of-at-least-32-bytes"
GROUPS = ("home", "search", "store", "listings", "purchases", "admin")
# Every query parameter and body field some route reads: each route gets all of them, so the
# ones it knows meet hostile values and the ones it does not are refused as unknown.
QUERY_NAMES = ("q", "category", "sort", "limit", "cursor", "min_price", "max_price")
BODY_FIELDS = (
    "slug",
    "name",
    "description",
    "store_slug",
    "category_id",
    "price_cents",
    "currency",
    "stock",
    "is_available",
    "product_id",
    "quantity",
    "expected_unit_price_cents",
    "enabled",
    "reason",
    "amount_cents",
    "mode",
)

HOSTILE_PIECES = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\x1f", "\x7f", "\u0085", "\u2028", "%00", "'", '"', "\\", "/"]
)
hostile_text = st.lists(st.one_of(HOSTILE_PIECES, st.text(max_size=4)), min_size=1, max_size=6).map(
    "".join
)
# Weighted towards hostile pieces: at these example counts, arbitrary Unicode alone rarely
# holds a NUL or a lone surrogate.
text = st.one_of(
    hostile_text,
    hostile_text,
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    st.sampled_from(["a" * 300, "9" * 30, "-lamp -chair", "USD", "JPY", "queued", "purchases"]),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=6,
)
claim_values = st.one_of(
    text,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.lists(text, max_size=3),
)
exp_values = st.one_of(
    st.just(int(time.time()) + 600),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.just(str(int(time.time()) + 600)),
    st.booleans(),
    st.none(),
)


# Most tokens are well signed and unexpired with a hostile subject, so requests reach the code
# behind authentication; the rest carry hostile claims of every type.
hostile_subjects = st.fixed_dictionaries(
    {"sub": text, "exp": st.just(int(time.time()) + 600), "roles": st.just(["admin"])}
)
hostile_claims = st.fixed_dictionaries(
    {
        "sub": st.one_of(text, claim_values),
        "exp": exp_values,
        "roles": st.one_of(st.lists(text, max_size=2), claim_values),
    },
    optional={"iat": claim_values, "nbf": claim_values},
)


def route_cases() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every (method, path) of the route table, with its path parameters."""
    return [
        (spec.method, spec.path, tuple(p.name for p in spec.params if p.location == "path"))
        for spec in ROUTES
    ]


DOCUMENT = openapi.document()


def documented(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The OpenAPI document's response for this route and status, if it lists one."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    response: dict[str, Any] | None = responses.get(str(status))
    return response


Send = Callable[[dict[str, Any]], httpx.Response]


@pytest.fixture(scope="module")
def send(catalog_database_url: str) -> Iterator[Send]:
    """Sends one request to the gateway; hypothesis drives it synchronously, so the gateway
    runs on a loop of this fixture's own (its pools bind to that loop)."""
    settings = settings_for(
        catalog_database_url,
        jwt_secret=SECRET,
        cursor_secret="fuzz",
        rate_limit_overrides=tuple((group, 0, 60) for group in GROUPS),
    )
    services = Services.from_settings(settings)
    transport = httpx.ASGITransport(app=create_gateway(services), client=("203.0.113.40", 1))
    client = httpx.AsyncClient(transport=transport, base_url="http://t")
    loop = asyncio.new_event_loop()
    try:
        yield lambda request: loop.run_until_complete(client.request(**request))
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(services.aclose())
        loop.close()


def url_piece(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def header_bytes(value: str) -> bytes:
    """Header values travel as bytes: keep what latin-1 can carry, minus line breaks."""
    return value.encode("latin-1", "ignore").replace(b"\r", b"").replace(b"\n", b"")


def token(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


@st.composite
def requests(draw: st.DrawFn, route: tuple[str, str, tuple[str, ...]]) -> dict[str, Any]:
    method, path, params = route
    for name in params:
        path = path.replace("{" + name + "}", url_piece(draw(text)) or "x")
    query = draw(st.dictionaries(st.sampled_from(QUERY_NAMES), text, max_size=3))
    claims: dict[str, Any] = draw(st.one_of(hostile_subjects, hostile_claims))
    headers = {
        "Authorization": "Bearer " + token(claims),
        "Idempotency-Key": header_bytes(draw(text)),
        "Content-Type": draw(
            st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"])
        ),
    }
    body = draw(st.dictionaries(st.sampled_from(BODY_FIELDS), json_values, max_size=5))
    content = json.dumps(body).encode() if method in ("POST", "PUT", "PATCH") else None
    query_string = "&".join(f"{url_piece(k)}={url_piece(v)}" for k, v in query.items())
    return {
        "method": method,
        "url": path + (f"?{query_string}" if query_string else ""),
        "headers": headers,
        "content": content,
    }


@pytest.mark.parametrize("route", route_cases(), ids=lambda case: f"{case[0]} {case[1]}")
def test_no_input_breaks_a_route(send: Send, route: tuple[str, str, tuple[str, ...]]) -> None:
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests(route))
    def check(request: dict[str, Any]) -> None:
        response = send(request)
        assert response.status_code < 500, (request, response.text)
        described = documented(route[0], route[1], response.status_code)
        assert described is not None, (request, response.status_code, "not in /openapi.json")
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.text
            problem = response.json()
            assert problem["status"] == response.status_code
            assert problem["code"] in described["x-problem-codes"], (request, problem)

    check()
