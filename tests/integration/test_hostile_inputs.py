"""Inputs PostgreSQL or the code cannot take are 4xx problems, never 500: the text rule, JSON
depth and numbers, media types, canonical ids, no slash redirects, the listing currency."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.test_seller import listing, new_store, seller_gateway, token

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}
ADMIN = token("root", roles=["admin"])
BAD_TEXTS = ["a\x00b", "\ud800", "x\udfffy"]
PRODUCT = "8a5f3e1c-2b4d-4c6e-9f80-1a2b3c4d5e6f"


@pytest.fixture(scope="module")
async def client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    groups = ("home", "search", "store", "listings", "purchases", "admin")
    limits = tuple((group, 0, 60) for group in groups)
    async with seller_gateway(catalog_database_url, "203.0.113.31", limits) as http:
        yield http


def raw_json(document: dict[str, Any]) -> bytes:
    """JSON with `\\uXXXX` escapes kept as written, so lone surrogates reach the server."""
    return json.dumps(document).encode()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status
    return body


async def test_search_text_is_checked(client: httpx.AsyncClient) -> None:
    for params in ({"q": "\x00"}, {"q": "lamp\x00"}, {"category": "chairs\x00"}, {"q": "a\x1fb"}):
        response = await client.get("/marketplace/search", params=params)
        body = assert_problem(response, 422, "validation_error")
        assert body["errors"][0]["location"] == "query"


async def test_store_slug_in_the_path(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/stores/shop%00"), 422, "validation_error")
    assert_problem(await client.get("/stores/Not-A-Slug"), 404, "store_not_found")
    assert_problem(await client.get("/stores/ab"), 404, "store_not_found")


@pytest.mark.parametrize("text", BAD_TEXTS)
async def test_store_and_listing_text(client: httpx.AsyncClient, text: str) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    for document in (
        {"slug": f"s-{uuid.uuid4().hex[:8]}", "name": text},
        {"slug": f"s-{uuid.uuid4().hex[:8]}", "name": "Shop", "description": text},
    ):
        response = await client.post(
            "/stores", content=raw_json(document), headers={**token(owner), **JSON}
        )
        assert_problem(response, 422, "validation_error")
    store = await new_store(client, owner)
    for field in ("name", "description"):
        response = await client.post(
            "/products",
            content=raw_json(listing(store, **{field: text})),
            headers={**token(owner), **JSON},
        )
        assert_problem(response, 422, "validation_error")
    created = await client.post("/products", json=listing(store), headers=token(owner))
    assert created.status_code == 201, created.text
    patched = await client.patch(
        f"/products/{created.json()['id']}",
        content=raw_json({"name": text}),
        headers={**token(owner), **JSON},
    )
    assert_problem(patched, 422, "validation_error")


async def test_descriptions_keep_line_breaks_names_do_not(client: httpx.AsyncClient) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    store = await new_store(client, owner)
    multi = await client.post(
        "/products",
        json=listing(store, description="line one\nline\ttwo\r\n"),
        headers=token(owner),
    )
    assert multi.status_code == 201, multi.text
    control = await client.post(
        "/products", json=listing(store, name="bell\x07"), headers=token(owner)
    )
    assert_problem(control, 422, "validation_error")


async def test_admin_credit_text(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/admin/wallets/a%00b/credits", json={"amount_cents": 100}, headers=ADMIN
    )
    assert_problem(response, 422, "validation_error")
    response = await client.post(
        "/admin/wallets/someone/credits",
        content=raw_json({"amount_cents": 100, "reason": "\ud800"}),
        headers={**ADMIN, **JSON, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert_problem(response, 422, "validation_error")
    switch = await client.get("/admin/kill-switches/purch%00ases", headers=ADMIN)
    assert_problem(switch, 422, "validation_error")


def write_routes(product: str) -> list[tuple[str, str, dict[str, str]]]:
    owner = token("owner-of-nothing")
    return [
        ("POST", "/stores", owner),
        ("POST", "/products", owner),
        ("PATCH", f"/products/{product}", owner),
        ("POST", "/purchases", {**token("buyer-x"), "Idempotency-Key": uuid.uuid4().hex}),
        ("PUT", "/admin/kill-switches/purchases", ADMIN),
        ("POST", "/admin/wallets/someone/credits", {**ADMIN, "Idempotency-Key": uuid.uuid4().hex}),
        ("PUT", f"/admin/products/{product}/purchase-mode", ADMIN),
    ]


async def test_deep_json_is_invalid_json_on_every_write_route(client: httpx.AsyncClient) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    just_too_deep = b'{"a": ' + b"[" * 32 + b"1" + b"]" * 32 + b"}"  # 33 levels
    for method, path, headers in write_routes(PRODUCT):
        for content in (deep, just_too_deep):
            response = await client.request(
                method, path, content=content, headers={**headers, **JSON}
            )
            body = assert_problem(response, 400, "invalid_json")
            assert "nested deeper than 32" in body["detail"] or "not valid JSON" in body["detail"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None, "application/xml"]
)
async def test_json_routes_take_json_only(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    for method, path, headers in write_routes(PRODUCT):
        request_headers = dict(headers)
        if content_type is not None:
            request_headers["Content-Type"] = content_type
        response = await client.request(method, path, content=b'{"a": 1}', headers=request_headers)
        assert_problem(response, 415, "unsupported_media_type")


async def test_json_media_type_variants_are_accepted(client: httpx.AsyncClient) -> None:
    for content_type in (
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ):
        response = await client.post(
            "/stores",
            content=b'{"slug": "x"}',
            headers={**token("media-type-user"), "Content-Type": content_type},
        )
        assert_problem(response, 422, "validation_error")  # past the media type, to the fields


async def test_details_are_our_own_words(client: httpx.AsyncClient) -> None:
    headers = {**token("words"), **JSON}
    broken = await client.post("/stores", content=b'{"slug": ', headers=headers)
    assert assert_problem(broken, 400, "invalid_json")["detail"] == (
        "The request body is not valid JSON (line 1, column 10)"
    )
    huge = await client.post("/stores", content=b'{"slug": ' + b"9" * 5000 + b"}", headers=headers)
    assert assert_problem(huge, 400, "invalid_json")["detail"] == (
        "A number in the request body is out of range"
    )
    infinite = await client.post("/stores", content=b'{"slug": 1e999}', headers=headers)
    assert_problem(infinite, 400, "invalid_json")


async def test_an_unknown_field_named_by_a_lone_surrogate(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/stores",
        content=raw_json({"slug": "abc", "name": "n", "\ud800": 1}),
        headers={**token("fields"), **JSON},
    )
    body = assert_problem(response, 422, "validation_error")
    assert "\ud800" in {error["field"] for error in body["errors"]}


@pytest.mark.parametrize(
    "spelling",
    [
        PRODUCT.upper(),
        "{" + PRODUCT + "}",
        PRODUCT.replace("-", ""),
        "urn:uuid:" + PRODUCT,
    ],
)
async def test_ids_have_one_spelling(client: httpx.AsyncClient, spelling: str) -> None:
    assert_problem(await client.get(f"/products/{spelling}"), 404, "not_found")
    assert_problem(
        await client.get(f"/purchases/{spelling}", headers=token("buyer-x")), 404, "not_found"
    )
    assert_problem(
        await client.put(
            f"/admin/products/{spelling}/purchase-mode", json={"mode": "direct"}, headers=ADMIN
        ),
        404,
        "not_found",
    )


async def test_not_a_uuid_is_still_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/products/not-a-uuid"), 422, "validation_error")


async def test_a_body_id_is_a_hyphenated_uuid(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/purchases",
        json={"product_id": "urn:uuid:" + PRODUCT, "quantity": 1},
        headers={**token("buyer-x"), "Idempotency-Key": uuid.uuid4().hex},
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "product_id"


@pytest.mark.parametrize("path", ["/marketplace/search/", "/health/", "/stores/"])
async def test_no_slash_redirects(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"Host": "evil.example"})
    assert_problem(response, 404, "not_found")
    assert "location" not in response.headers


@pytest.mark.parametrize("currency", ["JPY", "XXX", "usd", "US", "EURO", "\x00SD"])
async def test_listings_are_in_the_marketplace_currency(
    client: httpx.AsyncClient, currency: str
) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    store = await new_store(client, owner)
    response = await client.post(
        "/products", json=listing(store, currency=currency), headers=token(owner)
    )
    body = assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in body["errors"]] == ["currency"]
    same = await client.post("/products", json=listing(store, currency="USD"), headers=token(owner))
    assert same.status_code == 201 and same.json()["currency"] == "USD"
