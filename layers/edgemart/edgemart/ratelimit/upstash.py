"""Upstash backend: the `upstash-redis` async client over Upstash's REST API.

The same Lua scripts as the Redis backend, one HTTPS request per check. Like the Redis
client, the REST client (an httpx client underneath) is built lazily per event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edgemart.ratelimit.base import Clock, RateLimitBackendError, now_micros
from edgemart.ratelimit.script import decision_from_reply, script_call
from edgemart.ratelimit.window import Decision, Policy

if TYPE_CHECKING:
    from upstash_redis.asyncio import Redis


class UpstashRateLimiter:
    backend = "upstash"

    def __init__(self, url: str, token: str, *, clock: Clock | None = None) -> None:
        self.url = url
        self.token = token
        self.clock = clock
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            from upstash_redis.asyncio import Redis

            self._client = Redis(
                url=self.url, token=self.token, rest_retries=0, allow_telemetry=False
            )
            self._loop = loop
        return self._client

    async def check(self, key: str, policy: Policy) -> Decision:
        from httpx import HTTPError
        from upstash_redis.errors import UpstashError

        now_us = None if self.clock is None else now_micros(self.clock)
        script, sha, keys, args = script_call(key, policy, now_us)
        client = self.client()
        try:
            try:
                reply: Any = await client.evalsha(sha, keys=keys, args=args)
            except UpstashError as exc:
                if "NOSCRIPT" not in str(exc):
                    raise
                await client.script_load(script)
                reply = await client.evalsha(sha, keys=keys, args=args)
        except (UpstashError, HTTPError, OSError) as exc:
            raise RateLimitBackendError(f"upstash: {exc}") from exc
        return decision_from_reply(policy, reply)

    async def ping(self) -> bool:
        try:
            return bool(await self.client().ping())
        except Exception:
            return False

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()
