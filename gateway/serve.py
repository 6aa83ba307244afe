"""`edgemart serve`: the gateway on uvicorn, with embedded defaults when nothing is set.

With no DATABASE_URL an embedded PostgreSQL starts in the data folder. Either way the
database is migrated and, when it holds no catalog, loaded with the demo catalog (unless
`demo=False`). Ctrl-C and SIGTERM stop the server and then the embedded database.
"""

from __future__ import annotations

import dataclasses
import signal
from types import FrameType

import psycopg

from edgemart.logging import logger
from edgemart.migrate import apply_migrations
from edgemart.services import Services
from edgemart.settings import Settings
from gateway.democatalog import catalog_is_present, seed_catalog
from gateway.embedded import EmbeddedPostgres, development_jwt_secret

DEMO_PRODUCTS = 5_000


def serve(
    host: str,
    port: int,
    *,
    demo: bool = True,
    demo_products: int = DEMO_PRODUCTS,
    settings: Settings | None = None,
) -> None:
    settings = settings or Settings.from_env()
    _exit_cleanly_on_sigterm()
    embedded: EmbeddedPostgres | None = None
    try:
        if settings.database_url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            settings = dataclasses.replace(settings, database_url=embedded.start())
        settings = _with_development_secret(settings)
        database_url = settings.database_url
        if database_url is None:  # narrowed for the type checker; set just above
            raise RuntimeError("no database URL")
        prepare_database(database_url, demo=demo, demo_products=demo_products)
        _run_uvicorn(settings, host, port)
    finally:
        if embedded is not None:
            embedded.stop()


def prepare_database(database_url: str, *, demo: bool, demo_products: int) -> None:
    applied = apply_migrations(database_url)
    logger.info("migrations: %d applied", len(applied))
    if not demo:
        return
    with psycopg.connect(database_url) as conn:
        present = catalog_is_present(conn)
    if present:
        logger.info("catalog present; demo catalog not loaded")
        return
    report = seed_catalog(database_url, products=demo_products)
    logger.info(
        "demo catalog loaded: %d categories, %d stores, %d products, %d buyers in %.1f s",
        report.categories,
        report.stores,
        report.products,
        report.buyers,
        report.seconds,
    )


def _with_development_secret(settings: Settings) -> Settings:
    if settings.jwt_secret or settings.jwt_jwks_url:
        return settings
    secret = development_jwt_secret(settings.data_dir)
    logger.warning(
        "JWT_SECRET is not set: using the development secret in %s (mint tokens with "
        "`edgemart token`); never run like this in production",
        settings.data_dir / "jwt-secret",
    )
    return dataclasses.replace(settings, jwt_secret=secret)


def _run_uvicorn(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from gateway.app import create_gateway
    from gateway.httpserver import server_config

    app = create_gateway(Services.from_settings(settings), run_schedules=True)
    config = server_config(app, host=host, port=port, access_log=False, lifespan="on")
    uvicorn.Server(config).run()


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM before uvicorn takes over its handlers (during migrate or seed) must still run
    the `finally` that stops the embedded database; uvicorn re-raises the signal it caught
    once it has shut down, which lands here too."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handle)
