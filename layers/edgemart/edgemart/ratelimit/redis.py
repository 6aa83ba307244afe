"""Redis backend (redis-py asyncio over TCP or a Unix socket).

Each check is one EVALSHA round trip; on NOSCRIPT (a restarted or flushed server) the script
is loaded and the call repeated. The client is built lazily per event loop, since its
connections belong to the loop that opened them, and never retries by itself: the fallback
wrapper decides what a failure means.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edgemart.ratelimit.base import Clock
from edgemart.ratelimit.script import ScriptedRateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis


class RedisRateLimiter(ScriptedRateLimiter):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        socket_timeout_s: float = 1.0,
        max_connections: int = 50,
    ) -> None:
        super().__init__(clock=clock)
        self.url = url
        self.socket_timeout_s = socket_timeout_s
        self.max_connections = max_connections
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # A bounded pool that makes a burst wait for a connection instead of failing
            # with "Too many connections"; the caller's timeout bounds the wait.
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=None,
                socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=self.socket_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = Redis(connection_pool=pool)
            self._loop = loop
        return self._client

    async def _evalsha(self, sha: str, keys: list[str], args: list[str]) -> Any:
        return await self.client().evalsha(sha, len(keys), *keys, *args)

    async def _script_load(self, script: str) -> None:
        await self.client().script_load(script)

    async def _ping(self) -> bool:
        return bool(await self.client().ping())

    def _is_noscript(self, exc: Exception) -> bool:
        from redis.exceptions import NoScriptError

        return isinstance(exc, NoScriptError)

    def _is_client_error(self, exc: Exception) -> bool:
        from redis.exceptions import RedisError

        return isinstance(exc, RedisError)

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose(close_connection_pool=True)
