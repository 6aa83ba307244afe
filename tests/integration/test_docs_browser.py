"""GET /docs in a real headless Chromium (Debian's `chromium`) against the gateway on loopback:
Swagger UI renders the gateway's /openapi.json and lists every route of the table."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgemart.routetable import ROUTES
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import serve_in_thread, settings_for

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)"
)


class Operations(HTMLParser):
    """The (method, path) of each operation Swagger UI rendered (its `opblock` elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []
        self.paths: list[str] = []
        self.render_errors = 0
        self._in_method = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if "opblock-summary-method" in classes:
            self._in_method = True
        if "opblock-summary-path" in classes and attributes.get("data-path"):
            self.paths.append(str(attributes["data-path"]))
        if "errors-wrapper" in classes:
            self.render_errors += 1

    def handle_data(self, data: str) -> None:
        if self._in_method:
            self.methods.append(data.strip())
            self._in_method = False


@pytest.fixture
def gateway_url(migrated_database_url: str) -> Iterator[str]:
    services = Services.from_settings(settings_for(migrated_database_url))
    with serve_in_thread(create_gateway(services)) as url:
        yield url


def rendered_dom(url: str, profile: Path) -> str:
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_swagger_ui_lists_every_route(gateway_url: str, tmp_path: Path) -> None:
    operations = Operations()
    operations.feed(rendered_dom(f"{gateway_url}/docs", tmp_path / "profile"))
    assert operations.render_errors == 0
    assert "/marketplace/search" in operations.paths and "/purchases" in operations.paths
    assert sorted(operations.paths) == sorted(route.path for route in ROUTES)
    assert sorted(operations.methods) == sorted(route.method for route in ROUTES)
