"""`edgemart serve`: the gateway on uvicorn, with embedded defaults when nothing is set.

The port is bound first, so a busy port fails at once, before any database work. With no
DATABASE_URL an embedded PostgreSQL starts in the data folder (see gateway.embedded for who
stops it). Either way the database is migrated and, when it holds no catalog, loaded with the
demo catalog (unless `demo=False`), and demo tenants are made (`demo_tenants`,
gateway.demotenants), as the role that owns the schema (MIGRATION_DATABASE_URL, else
DATABASE_URL; the embedded server's superuser); the app connects with DATABASE_URL (the
embedded server's `edgemart_api`, which owns nothing). All of that happens once, in this
process; the app then runs in `workers` uvicorn processes (gateway.workers); the scheduled
jobs run in the one process, of all those on the database, that holds the scheduler lease
(gateway.scheduler).
Ctrl-C and SIGTERM stop the server (every worker) and then the embedded database. Every
2xx/3xx access line is logged unless ACCESS_LOG_SAMPLE_RATE says otherwise.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import signal
import socket
from collections.abc import Mapping
from types import FrameType

import psycopg

from edgemart.errors import EdgemartError
from edgemart.logging import logger
from edgemart.migrate import apply_migrations
from edgemart.settings import UNSET, Settings, environment_value
from gateway.democatalog import catalog_is_present, seed_catalog
from gateway.demotenants import announce_demo_tenants, prepare_demo_tenants
from gateway.embedded import application_url, database_url_for, development_jwt_secret

DEMO_PRODUCTS = 5_000
SERVE_ACCESS_LOG_SAMPLE_RATE = 1.0


class PortInUseError(EdgemartError):
    """Another process listens on the address `serve` was asked to use."""


def serve(
    host: str,
    port: int,
    *,
    demo: bool = True,
    demo_products: int = DEMO_PRODUCTS,
    demo_tenants: int = 0,
    settings: Settings | None = None,
    workers: int = 1,
) -> None:
    settings = settings or serve_settings(Settings.from_env(), os.environ)
    if settings.database_url is None and settings.migration_database_url is not None:
        raise EdgemartError(
            "MIGRATION_DATABASE_URL is set and DATABASE_URL is not: set both (the schema's "
            "owner and the application's role), or neither for the embedded database"
        )
    listener = bind_listener(host, port)
    try:
        _exit_cleanly_on_sigterm()
        owner = settings.owner_database_url
        with database_url_for(owner, settings.data_dir, create=True) as owner_url:
            prepare_database(owner_url, demo=demo, demo_products=demo_products)
            if demo_tenants:
                announce_demo_tenants(prepare_demo_tenants(owner_url, demo_tenants), port)
            # The embedded server's application role exists once the migrations made its group.
            app_url = settings.database_url or application_url(owner_url)
            settings = _with_development_secret(dataclasses.replace(settings, database_url=app_url))
            settings = with_shared_cursor_secret(settings)
            if workers > 1:
                _warn_of_per_worker_state(settings)
            _run_uvicorn(settings, host, port, listener, workers)
    finally:
        listener.close()


def serve_settings(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """A developer watching `serve` sees every request: the 1% sampling meant for production
    applies only when ACCESS_LOG_SAMPLE_RATE is set (an empty value counts as unset)."""
    if environment_value("access_log_sample_rate", environ) is not UNSET:
        return settings
    return dataclasses.replace(settings, access_log_sample_rate=SERVE_ACCESS_LOG_SAMPLE_RATE)


def bind_listener(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound now and handed to uvicorn later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use (another `edgemart serve`?): "
                "stop what listens there or choose another --port"
            ) from None
        raise EdgemartError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return listener


def prepare_database(database_url: str, *, demo: bool, demo_products: int) -> None:
    run = apply_migrations(database_url)
    logger.info(
        "migrations: %d applied; definitions: %d applied",
        len(run.migrations),
        len(run.definitions),
    )
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
        settings.data_dir.resolve() / "jwt-secret",
    )
    return dataclasses.replace(settings, jwt_secret=secret)


def with_shared_cursor_secret(settings: Settings) -> Settings:
    """Without CURSOR_SECRET each process makes a random key: a worker would refuse another's
    cursors, and hash one client differently for popular searches. serve makes one key for
    all of its workers, for as long as it runs."""
    if settings.cursor_secret:
        return settings
    return dataclasses.replace(settings, cursor_secret=secrets.token_urlsafe(32))


def kept_per_worker(settings: Settings) -> list[str]:
    """What several workers would each keep in their own memory, with these settings, that
    should be shared (cached pages always are: a write refreshes them in its own worker)."""
    kept = []
    if _rate_limits_in_memory(settings):
        kept.append("rate limits (each worker allows the whole limit)")
    if settings.redis_url is None:
        kept.append(
            "buffered counts (searches, views, search history) of the workers that do not run "
            "the scheduled jobs, which are then never written"
        )
    return kept


def _rate_limits_in_memory(settings: Settings) -> bool:
    if settings.rate_limit_backend != "auto":
        return settings.rate_limit_backend == "memory"
    upstash = settings.upstash_redis_rest_url and settings.upstash_redis_rest_token
    return not (settings.redis_url or upstash)


def _warn_of_per_worker_state(settings: Settings) -> None:
    kept = kept_per_worker(settings)
    if kept:
        logger.warning("several workers keep apart: %s; set REDIS_URL", "; ".join(kept))


def _run_uvicorn(
    settings: Settings, host: str, port: int, listener: socket.socket, workers: int
) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from gateway.httpserver import server_config, uvicorn_log_config
    from gateway.workers import (
        WORKER_APP,
        check_worker_settings,
        run_folder,
        worker_environment,
        worker_gateway,
    )

    with run_folder() as folder:
        os.environ.update(worker_environment(settings, folder))
        check_worker_settings(settings, os.environ)
        # Built once here as each worker will build it (nothing connects before its first
        # use), so a configuration error stops serve with its one-line message instead of
        # failing every worker.
        worker_gateway()
        config = server_config(
            WORKER_APP,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            lifespan="on",
            log_config=uvicorn_log_config(settings.log_level),
        )
        # uvicorn says where it listens only for sockets it binds itself.
        logger.info("gateway listening on http://%s:%d (Ctrl-C to stop)", host, port)
        if workers == 1:
            uvicorn.Server(config).run(sockets=[listener])
            return
        logger.info("gateway runs in %d worker processes", workers)
        Multiprocess(config, sockets=[listener]).run()


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM before uvicorn takes over its handlers (during migrate or seed) must still run
    the `finally` that stops the embedded database; uvicorn re-raises the signal it caught
    once it has shut down, which lands here too."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handle)
