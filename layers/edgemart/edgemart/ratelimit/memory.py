"""In-process rate limiter: exact per process, bounded memory, safe across asyncio tasks.

`check` never awaits, so on one event loop each check runs to completion before another
starts: no lock is needed. Keys live in an LRU-ordered dict capped at `max_keys`; every new key
first drops up to two idle keys from the cold end (a key is idle once its newest request has
left its window), so memory follows the active keys. When the cap is reached by active keys
the least recently seen one is evicted and starts over, which can only admit more, never
refuse a legitimate request.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import TypeVar

from edgemart.ratelimit.base import Clock, now_micros
from edgemart.ratelimit.window import (
    Decision,
    Policy,
    counter_admits,
    counter_decision,
    counter_elapsed,
    log_decision,
)

DEFAULT_MAX_KEYS = 100_000
_IDLE_SWEEP_PER_CHECK = 2


class _LogState:
    __slots__ = ("window_us", "stamps")

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self.stamps: deque[int] = deque()

    def idle(self, now_us: int) -> bool:
        return not self.stamps or self.stamps[-1] <= now_us - self.window_us


class _CounterState:
    __slots__ = ("window_us", "index", "cur", "prev")

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self.index = -1
        self.cur = 0
        self.prev = 0

    def idle(self, now_us: int) -> bool:
        return now_us // self.window_us > self.index + 1


_S = TypeVar("_S", _LogState, _CounterState)


class MemoryRateLimiter:
    backend = "memory"

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS, clock: Clock = time.time) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._states: OrderedDict[str, _LogState | _CounterState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    async def check(self, key: str, policy: Policy) -> Decision:
        return self.check_now(key, policy)

    def check_now(self, key: str, policy: Policy) -> Decision:
        """`check` without the coroutine. The sliding log (the default) is checked inline:
        this runs on every limited request, and each extra call costs it measurably."""
        now_us = now_micros(self.clock)
        state_key = f"{policy.name}:{policy.algorithm}:{key}"
        if policy.algorithm == "counter":
            counter = self._state(state_key, policy, _CounterState, now_us)
            return self._check_counter(counter, policy, now_us)
        states = self._states
        state = states.get(state_key)
        if type(state) is _LogState and state.window_us == policy.window_us:
            states.move_to_end(state_key)
        else:
            state = self._state(state_key, policy, _LogState, now_us)
        stamps = state.stamps
        cutoff = now_us - policy.window_us
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()
        allowed = len(stamps) < policy.limit
        if allowed:
            stamps.append(now_us)
        return log_decision(policy, allowed, len(stamps), stamps[0] if stamps else now_us, now_us)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._states.clear()

    def _state(self, state_key: str, policy: Policy, kind: type[_S], now_us: int) -> _S:
        states = self._states
        state = states.get(state_key)
        if isinstance(state, kind) and state.window_us == policy.window_us:
            states.move_to_end(state_key)
            return state
        # A new key: make room first, so idle keys go before the cap evicts active ones.
        self._sweep_idle(now_us)
        state = kind(policy.window_us)
        states[state_key] = state
        if len(states) > self.max_keys:
            states.popitem(last=False)
        return state

    def _sweep_idle(self, now_us: int) -> None:
        states = self._states
        for _ in range(_IDLE_SWEEP_PER_CHECK):
            if len(states) <= 1:
                return
            oldest_key = next(iter(states))
            if not states[oldest_key].idle(now_us):
                return
            del states[oldest_key]

    @staticmethod
    def _check_counter(state: _CounterState, policy: Policy, now_us: int) -> Decision:
        index = now_us // policy.window_us
        if index != state.index:
            state.prev = state.cur if index == state.index + 1 else 0
            state.cur = 0
            state.index = index
        allowed = counter_admits(policy, state.prev, state.cur, counter_elapsed(policy, now_us))
        if allowed:
            state.cur += 1
        return counter_decision(policy, allowed, state.prev, state.cur, now_us)
