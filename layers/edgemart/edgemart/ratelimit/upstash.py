"""Upstash backend: the `upstash-redis` async client over Upstash's REST API.

The same Lua scripts as the Redis backend, one HTTPS request per check. Like the Redis
client, the REST client (an httpx client underneath) is built lazily per event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgemart.perloop import PerLoop
from edgemart.ratelimit.base import Clock
from edgemart.ratelimit.script import ScriptedRateLimiter

if TYPE_CHECKING:
    from upstash_redis.asyncio import Redis

    from edgemart.tracing.tracer import Tracing


class UpstashRateLimiter(ScriptedRateLimiter):
    backend = "upstash"

    def __init__(
        self, url: str, token: str, *, clock: Clock | None = None, tracing: Tracing | None = None
    ) -> None:
        super().__init__(clock=clock)
        self.url = url
        self.token = token
        self.tracing = tracing
        self._clients: PerLoop[Redis] = PerLoop(self._build)

    def client(self) -> Redis:
        return self._clients.get()

    def _build(self) -> Redis:
        from upstash_redis.asyncio import Redis

        client_class = Redis if self.tracing is None else self.tracing.upstash_class()
        return client_class(url=self.url, token=self.token, rest_retries=0, allow_telemetry=False)

    async def _evalsha(self, sha: str, keys: list[str], args: list[str]) -> Any:
        return await self.client().evalsha(sha, keys=keys, args=args)

    async def _script_load(self, script: str) -> None:
        await self.client().script_load(script)

    async def _ping(self) -> bool:
        return bool(await self.client().ping())

    def _is_noscript(self, exc: Exception) -> bool:
        from upstash_redis.errors import UpstashError

        return isinstance(exc, UpstashError) and "NOSCRIPT" in str(exc)

    def _is_client_error(self, exc: Exception) -> bool:
        from httpx import HTTPError
        from upstash_redis.errors import UpstashError

        return isinstance(exc, UpstashError | HTTPError | OSError)

    async def aclose(self) -> None:
        client = self._clients.take()
        if client is not None:
            await client.close()
