"""GET /docs through the gateway: our page, Swagger UI's assets from the installed bundle, only
the gateway's own URLs, cacheable, not rate limited, and nothing else of the bundle served."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from edgemart.openapi import document
from edgemart.routetable import ROUTES
from gateway.docs import bundle_directory

pytestmark = pytest.mark.anyio

EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class References(HTMLParser):
    """Every URL the page makes the browser load (src, href) and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
        self._in_script = tag == "script" and not dict(attrs).get("src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_scripts.append(data)


def references(page: str) -> References:
    parser = References()
    parser.feed(page)
    return parser


async def test_the_page_is_ours_and_cacheable(gateway_client: httpx.AsyncClient) -> None:
    response = await gateway_client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers
    (script,) = references(response.text).inline_scripts
    assert 'url: "/openapi.json"' in script
    assert "validatorUrl: null" in script
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


async def test_the_page_references_only_the_gateway(gateway_client: httpx.AsyncClient) -> None:
    page = (await gateway_client.get("/docs")).text
    urls = references(page).urls
    assert urls, "the page loads Swagger UI's assets"
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        assert parts.path.startswith("/docs/assets/"), url
    assert "http:" not in page and "https:" not in page and "//" not in page


async def test_every_referenced_asset_is_served(gateway_client: httpx.AsyncClient) -> None:
    page = (await gateway_client.get("/docs")).text
    for url in references(page).urls:
        response = await gateway_client.get(url)
        assert response.status_code == 200, url
        name = Path(url).name
        expected = EXPECTED_TYPES[Path(name).suffix]
        assert response.headers["content-type"].split(";")[0] == expected, url
        assert response.headers["cache-control"] == "public, max-age=3600", url
        assert "ratelimit" not in response.headers, url
        assert response.content == (bundle_directory() / name).read_bytes(), url


@pytest.mark.parametrize(
    "name",
    [
        "index.html",  # in the bundle, but not an asset of our page
        "swagger-initializer.js",  # the bundle's own, loading a remote petstore document
        "swagger-ui.js.map",
        "SWAGGER-UI.CSS",
        "nope.js",
        "..%2F__init__.py",
        "%2e%2e%2f%2e%2e%2fapp.py",
    ],
)
async def test_anything_else_is_a_problem_404(gateway_client: httpx.AsyncClient, name: str) -> None:
    assert (bundle_directory() / "swagger-ui.css").is_file()  # the 404 is not a missing bundle
    response = await gateway_client.get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert response.headers["cache-control"] == "no-store"


async def test_only_get_is_served(gateway_client: httpx.AsyncClient) -> None:
    response = await gateway_client.post("/docs")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "GET, HEAD"


def test_the_docs_routes_are_not_part_of_the_api() -> None:
    """Gateway-only: no function serves them, so neither the table nor /openapi.json lists them
    (and template.yaml has no event for them)."""
    assert not any(route.path.startswith("/docs") for route in ROUTES)
    assert not any(path.startswith("/docs") for path in document()["paths"])
