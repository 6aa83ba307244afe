"""GET /openapi.json through the gateway: the table's document, not rate limited, never stored."""

from __future__ import annotations

import httpx
import pytest

from edgemart.openapi import document

pytestmark = pytest.mark.anyio


async def test_the_gateway_serves_the_document(gateway_client: httpx.AsyncClient) -> None:
    response = await gateway_client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers
    assert response.json() == document()
    again = await gateway_client.get("/openapi.json")
    assert again.content == response.content
