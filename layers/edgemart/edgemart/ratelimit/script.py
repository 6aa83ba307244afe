"""The Lua scripts the Redis and Upstash backends run: one atomic round trip per check.

Each script reads the clock with `TIME` on the Redis server (so processes with skewed clocks
agree) unless the caller passes a time, which tests do. A script only decides admission and
updates state; it returns the raw state and `window.py` turns it into a `Decision`, exactly
as for the memory backend.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from typing import Any

from edgemart.ratelimit.base import Clock, RateLimitBackendError, now_micros
from edgemart.ratelimit.window import Decision, Policy, counter_decision, log_decision

# The arguments both scripts start with: ARGV = limit, window_us, now_us (-1: server clock).
_ARGUMENTS = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# KEYS[1] = sorted set of admitted timestamps. ARGV = limit, window_us, now_us (-1: server
# clock), member (unique per request). Returns {allowed, count, oldest_us, now_us}.
LOG_SCRIPT = (
    """
local key = KEYS[1]"""
    + _ARGUMENTS
    + """
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
    redis.call('ZADD', key, now, ARGV[4])
    redis.call('PEXPIRE', key, math.ceil(window / 1000))
    count = count + 1
    allowed = 1
end
local oldest = now
if count > 0 then
    oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
end
return {allowed, count, oldest, now}
"""
)

# KEYS[1] = base name of the per-window counters (a {hash tag} keeps both windows in one
# cluster slot). ARGV = limit, window_us, now_us (-1: server clock). Returns
# {allowed, cur, prev, now_us}.
COUNTER_SCRIPT = (
    """
local base = KEYS[1]"""
    + _ARGUMENTS
    + """
local index = math.floor(now / window)
local cur_key = base .. ':' .. string.format('%.0f', index)
local prev_key = base .. ':' .. string.format('%.0f', index - 1)
local cur = tonumber(redis.call('GET', cur_key) or '0')
local prev = tonumber(redis.call('GET', prev_key) or '0')
local elapsed = now - index * window
local allowed = 0
if prev * (window - elapsed) + (cur + 1) * window <= limit * window then
    cur = redis.call('INCR', cur_key)
    redis.call('PEXPIRE', cur_key, math.ceil(window * 2 / 1000))
    allowed = 1
end
return {allowed, cur, prev, now}
"""
)

LOG_SHA = hashlib.sha1(LOG_SCRIPT.encode()).hexdigest()
COUNTER_SHA = hashlib.sha1(COUNTER_SCRIPT.encode()).hexdigest()
KEY_PREFIX = "edgemart:rl:"

_member_prefix = os.urandom(6).hex()
_member_sequence = itertools.count()


def script_call(
    key: str, policy: Policy, now_us: int | None
) -> tuple[str, str, list[str], list[str]]:
    """(script, sha, keys, args) for one check; `now_us=None` means the server's clock."""
    redis_key = f"{KEY_PREFIX}{policy.name}:{{{key}}}"
    args = [str(policy.limit), str(policy.window_us), str(-1 if now_us is None else now_us)]
    if policy.algorithm == "counter":
        return COUNTER_SCRIPT, COUNTER_SHA, [redis_key + ":c"], args
    member = f"{_member_prefix}:{next(_member_sequence)}"
    return LOG_SCRIPT, LOG_SHA, [redis_key + ":l"], [*args, member]


def decision_from_reply(policy: Policy, reply: object) -> Decision:
    if not isinstance(reply, Sequence) or len(reply) != 4:
        raise RateLimitBackendError(f"unexpected rate-limit script reply {reply!r}")
    allowed, first, second, now_us = (int(value) for value in reply)
    if policy.algorithm == "counter":
        return counter_decision(policy, bool(allowed), prev=second, cur=first, now_us=now_us)
    return log_decision(policy, bool(allowed), count=first, oldest_us=second, now_us=now_us)


class ScriptedRateLimiter:
    """What the Redis and Upstash backends share: one EVALSHA per check, the script loaded
    again on NOSCRIPT, client errors turned into `RateLimitBackendError`. A backend supplies
    only the client primitives (Powertools' persistence-layer pattern)."""

    backend = "scripted"

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock

    async def check(self, key: str, policy: Policy) -> Decision:
        now_us = None if self.clock is None else now_micros(self.clock)
        script, sha, keys, args = script_call(key, policy, now_us)
        try:
            try:
                reply = await self._evalsha(sha, keys, args)
            except Exception as exc:
                if not self._is_noscript(exc):
                    raise
                await self._script_load(script)
                reply = await self._evalsha(sha, keys, args)
        except Exception as exc:
            if not self._is_client_error(exc):
                raise
            raise RateLimitBackendError(f"{self.backend}: {exc}") from exc
        return decision_from_reply(policy, reply)

    async def ping(self) -> bool:
        try:
            return await self._ping()
        except Exception:
            return False

    async def _evalsha(self, sha: str, keys: list[str], args: list[str]) -> Any:
        raise NotImplementedError

    async def _script_load(self, script: str) -> None:
        raise NotImplementedError

    async def _ping(self) -> bool:
        raise NotImplementedError

    def _is_noscript(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _is_client_error(self, exc: Exception) -> bool:
        raise NotImplementedError
