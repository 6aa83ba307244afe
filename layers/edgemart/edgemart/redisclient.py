"""One redis-py asyncio client per process, shared by everything that talks to Redis (the
rate limiter and the buffered counters), so a process holds one bounded connection pool.

The client is built lazily per event loop, since its connections belong to the loop that
opened them, and never retries by itself: callers decide what a failure means.

redis-py 8 imports OpenTelemetry's metrics SDK whenever it is installed (as it is in the
layer, for tracing), for metrics of its own that edgemart never turns on: some 45 ms at the
first Redis command of each process (decision 0028). So redis-py is imported with the part
of OpenTelemetry that nothing has loaded yet hidden from it, which it takes as "not
installed": all of it while tracing is off, its metrics SDK while tracing is on.

The wait for a free connection of the pool is bounded (`pool_timeout_s`, one socket timeout
by default), not left to the callers' own timeouts: on Python 3.11 the pool's
`asyncio.Condition` loses a wake-up when the waiter it woke is cancelled before it runs (a
caller's timeout firing at that moment; CPython gh-112202, fixed in 3.13), and a waiter that
missed it would otherwise wait for good beside a free connection, however quiet the pool.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from edgemart.perloop import PerLoop

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from edgemart.tracing.tracer import Tracing


_HIDDEN_FROM_REDIS = ("opentelemetry", "opentelemetry.sdk.metrics")


def import_redis() -> None:
    """Import redis-py without the OpenTelemetry it would load (see the module docstring)."""
    if "redis" in sys.modules:
        return
    hidden = next((name for name in _HIDDEN_FROM_REDIS if name not in sys.modules), None)
    if hidden is not None:
        # None in sys.modules makes importing that name fail, as if it were not installed.
        sys.modules[hidden] = None  # type: ignore[assignment]
    try:
        import redis.asyncio  # noqa: F401
    finally:
        if hidden is not None:
            del sys.modules[hidden]


class LazyRedis:
    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 1.0,
        pool_timeout_s: float | None = None,
        max_connections: int = 50,
        tracing: Tracing | None = None,
    ) -> None:
        """`pool_timeout_s`: the longest wait for a free connection (`socket_timeout_s` if
        None), then redis-py's ConnectionError; `tracing`: a span per command
        (edgemart.tracing.redis)."""
        self.url = url
        self.socket_timeout_s = socket_timeout_s
        self.pool_timeout_s = socket_timeout_s if pool_timeout_s is None else pool_timeout_s
        self.max_connections = max_connections
        self.tracing = tracing
        self._clients: PerLoop[Redis] = PerLoop(self._build)

    def client(self) -> Redis:
        return self._clients.get()

    def _build(self) -> Redis:
        import_redis()
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # A bounded pool that makes a burst wait for a connection instead of failing
        # with "Too many connections", for `pool_timeout_s` at most (see the module docstring).
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.pool_timeout_s,
            socket_timeout=self.socket_timeout_s,
            socket_connect_timeout=self.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        client_class = Redis if self.tracing is None else self.tracing.redis_class()
        return client_class(connection_pool=pool)

    async def aclose(self) -> None:
        """Close the pool; safe to call more than once (a later use opens a new one)."""
        client = self._clients.take()
        if client is not None:
            await client.aclose(close_connection_pool=True)
