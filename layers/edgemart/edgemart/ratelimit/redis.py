"""Redis backend (redis-py asyncio over TCP or a Unix socket).

Each check is one EVALSHA round trip; on NOSCRIPT (a restarted or flushed server) the script
is loaded and the call repeated. The client (`edgemart.redisclient`, usually the
process's shared one) never retries by itself: the fallback wrapper decides what a failure
means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgemart.ratelimit.base import Clock
from edgemart.ratelimit.script import ScriptedRateLimiter
from edgemart.redisclient import LazyRedis

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
        redis: LazyRedis | None = None,
    ) -> None:
        """`redis` shares a process's client; without it the limiter builds its own."""
        super().__init__(clock=clock)
        self.redis = redis or LazyRedis(
            url, socket_timeout_s=socket_timeout_s, max_connections=max_connections
        )

    def client(self) -> Redis:
        return self.redis.client()

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
        await self.redis.aclose()
