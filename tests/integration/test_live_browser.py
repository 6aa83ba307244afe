"""Live updates in a real headless Chromium (Debian's `chromium`): a small page opens the
gateway's WebSocket, subscribes to a product and shows its stock; a purchase then changes
what the page shows. The DOM is read through Chromium's DevTools protocol."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import serve_in_thread, settings_for, unused_port
from tests.integration.test_docs_browser import CHROMIUM
from tests.support.processes import stop_process
from tests.support.purchases import product_for
from tests.support.tokens import SECRET, headers

pytestmark = [
    pytest.mark.live,
    pytest.mark.anyio,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed"),
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>stock</title></head>
<body>
<p>Stock: <span id="stock">connecting</span> (<span id="state">-</span>)</p>
<script>
const params = new URLSearchParams(location.search);
const socket = new WebSocket(params.get("ws"));
socket.onopen = () => socket.send(JSON.stringify(
  {action: "subscribe", channel: "product:" + params.get("product")}));
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.type === "stock") {
    document.getElementById("stock").textContent = message.data.stock_available;
    document.getElementById("state").textContent =
      message.data.in_stock ? "in stock" : "sold out";
  }
};
</script>
</body></html>
"""


@pytest.fixture
def gateway_url(catalog_database_url: str) -> Iterator[str]:
    settings = settings_for(
        catalog_database_url, jwt_secret=SECRET, rate_limit_overrides=(("purchases", 0, 60),)
    )
    with serve_in_thread(create_gateway(Services.from_settings(settings))) as url:
        yield url


@pytest.fixture
def devtools(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A headless Chromium with its DevTools endpoint on a loopback port, showing nothing yet."""
    port = unused_port()
    page = tmp_path / "stock.html"
    page.write_text(PAGE, encoding="utf-8")
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, page
    finally:
        stop_process(process, timeout_s=30)


async def page_target(port: int) -> str:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while True:
            try:
                targets = (await client.get(f"http://127.0.0.1:{port}/json")).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromium's DevTools endpoint did not come up")
            await asyncio.sleep(0.2)


class DevTools:
    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.socket.recv())
            if reply.get("id") == self.next_id:
                result: dict[str, Any] = reply["result"]
                return result

    async def text_of(self, selector: str) -> str:
        expression = f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return str(result["result"].get("value", ""))

    async def wait_for_text(self, selector: str, expected: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while (shown := await self.text_of(selector)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{selector} shows {shown!r}, not {expected!r}")
            await asyncio.sleep(0.1)


async def test_a_page_shows_the_stock_change_pushed_over_the_websocket(
    gateway_url: str, devtools: tuple[int, Path], catalog_database_url: str
) -> None:
    port, page = devtools
    product = product_for(catalog_database_url, "browser-buyer", stock=1, funds=100_000)
    ws = gateway_url.replace("http://", "ws://") + "/ws"
    async with connect(await page_target(port), max_size=None) as socket:
        browser = DevTools(socket)
        await browser.call("Page.navigate", url=f"{page.as_uri()}?ws={ws}&product={product}")
        await browser.wait_for_text("#stock", "1")  # the state sent on subscribe
        assert await browser.text_of("#state") == "in stock"
        async with httpx.AsyncClient(base_url=gateway_url) as client:
            bought = await client.post(
                "/purchases",
                json={"product_id": product, "quantity": 1},
                headers=headers("browser-buyer"),
            )
        assert bought.status_code == 201, bought.text
        await browser.wait_for_text("#stock", "0")  # pushed after the commit
        assert await browser.text_of("#state") == "sold out"
