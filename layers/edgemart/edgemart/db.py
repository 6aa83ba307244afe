"""Pooled PostgreSQL access: one lazily opened psycopg `AsyncConnectionPool` per role.

Pools open on first use, never at import, so importing a function needs no database. A pool
belongs to the event loop that opened it; Mangum keeps one loop per Lambda execution
environment, so the pool is reused across invocations. Should the loop change (a test
driving the app from another loop), a fresh pool is opened for the new loop.

Connections are in autocommit: a single statement is one round trip instead of the
BEGIN/statement/COMMIT the pool's default transaction handling costs. Code that needs a
transaction opens one explicitly with `conn.transaction()`.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection, InternalError, OperationalError
from psycopg.errors import LockNotAvailable
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from edgemart.breaker import CircuitBreaker, CircuitOpenError
from edgemart.dbsecret import DatabaseSecret
from edgemart.errors import EdgemartError
from edgemart.logging import logger
from edgemart.settings import Settings

if TYPE_CHECKING:
    from edgemart.tracing.tracer import Tracing

Connection = AsyncConnection[DictRow]

# Errors that mean "the database is not available", as opposed to "it answered with an error":
# connection loss, statement timeouts (QueryCanceled is an OperationalError), an exhausted
# pool, an open circuit. These feed the breaker and turn into stale reads or 503s.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    PoolTimeout,
    CircuitOpenError,
)
REPLACED_POOL_CLOSE_WAIT_S = 5.0
"""How long `Database.close` waits for pools replaced by breaker probes to finish closing."""


async def check_if_spoken(conn: Connection) -> None:
    """The pool's check of a connection before handing it out, with no round trip for one
    that has been quiet. A connection the server ended while it sat in the pool (a restart,
    `pg_terminate_backend`, an idle timeout) has the server's goodbye or an end-of-file
    waiting on its socket; one with nothing to read is handed out as it is, and only one
    with something waiting is checked with an empty query, which raises if it is dead. The
    empty query on every checkout cost a round trip per request, a quarter of a purchase's
    CPU in the gateway (bench/capacity/PROFILE.md). A connection that dies after this check
    fails its statement, as it would after the round-trip check; callers retry or answer
    503 either way."""
    if conn.closed:
        raise OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        await AsyncConnectionPool.check_connection(conn)


class DatabaseNotConfiguredError(EdgemartError):
    """No DATABASE_URL is set for a process that needs the database."""


def replica_configured(settings: Settings) -> bool:
    """Whether a read replica is set: its URL, or a host for the primary's secret."""
    return bool(
        settings.database_replica_url
        or (settings.database_secret_arn and settings.database_replica_host)
    )


def _secret(
    settings: Settings, arn: str, host: str | None, tracing: Tracing | None
) -> DatabaseSecret:
    """The database secret `arn`, connecting to `host` (else the host the secret names)."""
    return DatabaseSecret(
        arn, host=host, max_age_s=settings.database_secret_max_age_s, tracing=tracing
    )


@dataclass(eq=False, repr=False)
class Database:
    conninfo: str | DatabaseSecret | None
    _: KW_ONLY
    name: str = "primary"
    min_size: int = 1
    max_size: int = 10
    timeout_s: float = 5.0
    statement_timeout_ms: int = 0
    transaction_pooler: bool = False
    breaker: CircuitBreaker | None = None
    tracing: Tracing | None = None
    _pool: AsyncConnectionPool[Connection] | None = field(default=None, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    _closing: set[asyncio.Future[None]] = field(default_factory=set, init=False)
    """Replaced pools being closed."""

    def __post_init__(self) -> None:
        self.max_size = max(self.max_size, self.min_size)

    @classmethod
    def primary_from(cls, settings: Settings, *, tracing: Tracing | None = None) -> Database:
        conninfo: str | DatabaseSecret | None = settings.database_url
        if settings.database_secret_arn:
            conninfo = _secret(
                settings, settings.database_secret_arn, settings.database_host, tracing
            )
        return cls._from(settings, conninfo, "primary", tracing)

    @classmethod
    def replica_from(cls, settings: Settings, *, tracing: Tracing | None = None) -> Database:
        """The read replica: `DATABASE_REPLICA_URL`, else the primary's secret with
        `DATABASE_REPLICA_HOST` (a streaming replica has the primary's roles and passwords)."""
        conninfo: str | DatabaseSecret | None = settings.database_replica_url
        arn, host = settings.database_secret_arn, settings.database_replica_host
        if conninfo is None and arn and host:
            conninfo = _secret(settings, arn, host, tracing)
        return cls._from(settings, conninfo, "replica", tracing)

    @classmethod
    def _from(
        cls,
        settings: Settings,
        conninfo: str | DatabaseSecret | None,
        name: str,
        tracing: Tracing | None,
    ) -> Database:
        return cls(
            conninfo,
            name=name,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout_s=settings.db_pool_timeout_s,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            transaction_pooler=settings.database_pooler == "transaction",
            breaker=CircuitBreaker(
                f"database_{name}",
                failure_threshold=settings.circuit_failure_threshold,
                success_threshold=settings.circuit_success_threshold,
                open_timeout_s=settings.circuit_open_timeout_s,
            ),
            tracing=tracing,
        )

    def connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if self.transaction_pooler:
            # Server-side prepared statements do not survive a transaction pooler handing the
            # next transaction to another server connection.
            kwargs["prepare_threshold"] = None
        elif self.statement_timeout_ms:
            kwargs["options"] = f"-c statement_timeout={self.statement_timeout_ms}"
        if self.tracing is not None:  # a span per statement (edgemart.tracing.psycopg)
            kwargs["cursor_factory"] = self.tracing.cursor_class()
        return kwargs

    async def pool(self) -> AsyncConnectionPool[Connection]:
        if self.conninfo is None:
            raise DatabaseNotConfiguredError(f"no connection string for the {self.name} database")
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop, self._pool, self._lock = loop, None, asyncio.Lock()
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    secret = self.conninfo if isinstance(self.conninfo, DatabaseSecret) else None
                    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                        self.conninfo,
                        connection_class=(secret.connection_class() if secret else AsyncConnection),
                        min_size=self.min_size,
                        max_size=self.max_size,
                        timeout=self.timeout_s,
                        kwargs=self.connection_kwargs(),
                        check=check_if_spoken,
                        name=f"edgemart-{self.name}",
                        open=False,
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self, *, timeout_s: float | None = None) -> AsyncIterator[Connection]:
        """A pooled connection, through the circuit breaker: an unavailable database counts
        as a failure, any answer (errors included) as a success. A lock wait that timed out
        (`55P03`, e.g. a concurrent request holding the same idempotency key) is an answer
        about contention, not about the database's health."""
        breaker = self.breaker
        probing = False
        if breaker is not None:
            probing = breaker.state == "half_open"
            breaker.before_call()
        try:
            if probing:
                # psycopg_pool retries a lost server with a growing backoff (tens of seconds
                # after a long outage); the probe must test the database now, so it gets a
                # fresh pool rather than waiting behind the old one's schedule.
                self._replace_pool()
            pool = await self.pool()
            async with pool.connection(timeout=timeout_s) as conn:
                try:
                    yield conn
                except InternalError as exc:
                    if not conn.broken:
                        raise
                    # The server went away mid-command (a transaction's COMMIT answered by a
                    # pooler that lost its server gets two results): a lost connection, like
                    # any other, so the breaker counts it and a retry may run on another.
                    raise OperationalError(f"connection lost: {exc}") from exc
        except LockNotAvailable:
            if breaker is not None:
                breaker.record_success()
            raise
        except (OperationalError, PoolTimeout):
            if breaker is not None:
                breaker.record_failure()
            raise
        except Exception:
            if breaker is not None:
                breaker.record_success()
            raise
        except BaseException:  # cancelled: the call told us nothing
            if breaker is not None:
                breaker.abandon()
            raise
        else:
            if breaker is not None:
                breaker.record_success()

    def _replace_pool(self) -> None:
        """Forget the pool (the next `pool()` opens a fresh one) and close it in the
        background: the probe must not wait behind the old pool's lock or its workers, nor
        leave it half closed should the probe be cancelled."""
        old, self._pool = self._pool, None
        if old is not None:
            closing = asyncio.ensure_future(old.close(timeout=0))
            self._closing.add(closing)
            closing.add_done_callback(self._closed_one)

    def _closed_one(self, closing: asyncio.Future[None]) -> None:
        self._closing.discard(closing)
        if not closing.cancelled() and closing.exception() is not None:
            logger.warning("closing a replaced %s pool failed: %r", self.name, closing.exception())

    async def close(self) -> None:
        pool, self._pool, self._loop = self._pool, None, None
        loop = asyncio.get_running_loop()
        closing = {future for future in self._closing if future.get_loop() is loop}
        self._closing = set()
        if closing:  # replaced pools' closes, bounded like the pool's own close below
            await asyncio.wait(closing, timeout=REPLACED_POOL_CLOSE_WAIT_S)
        if pool is not None:
            await pool.close()
