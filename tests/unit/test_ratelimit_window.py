"""The pure window logic and the memory backend, including property-based checks."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from edgemart.ratelimit.memory import DEFAULT_MAX_KEYS, MemoryRateLimiter
from edgemart.ratelimit.window import MICROS, Policy, counter_decision, log_decision
from tests.conftest import FakeClock


def clocked_limiter(max_keys: int = DEFAULT_MAX_KEYS) -> tuple[FakeClock, MemoryRateLimiter]:
    """A memory limiter on a fake clock: time stands still until the test moves it."""
    clock = FakeClock()
    return clock, MemoryRateLimiter(max_keys=max_keys, clock=clock)


def run_timeline(policy: Policy, offsets_us: list[int]) -> list[bool]:
    clock, limiter = clocked_limiter()
    base = 1_800_000_000 * MICROS
    admitted = []
    for offset in offsets_us:
        clock.now = (base + offset) / MICROS
        admitted.append(limiter.check_now("k", policy).allowed)
    return admitted


def reference_log(limit: int, window_us: int, times: list[int]) -> list[bool]:
    """The definition, by brute force: admit while fewer than `limit` admitted in (t-W, t]."""
    admitted_times: list[int] = []
    decisions = []
    for t in times:
        in_window = [a for a in admitted_times if t - window_us < a <= t]
        ok = len(in_window) < limit
        if ok:
            admitted_times.append(t)
        decisions.append(ok)
    return decisions


timelines = st.lists(st.integers(min_value=0, max_value=5 * MICROS), min_size=1, max_size=120).map(
    sorted
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 8), times=timelines)
def test_log_matches_the_reference_model_and_is_exact(limit: int, times: list[int]) -> None:
    policy = Policy("p", limit, 1)
    admitted = run_timeline(policy, times)
    assert admitted == reference_log(limit, policy.window_us, times)
    admitted_times = [t for t, ok in zip(times, admitted, strict=True) if ok]
    # Exactness: no interval of one window holds more than `limit` admitted requests.
    for end in admitted_times:
        assert sum(1 for a in admitted_times if end - policy.window_us < a <= end) <= limit


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 8), times=timelines)
def test_counter_stays_within_its_documented_bound(limit: int, times: list[int]) -> None:
    policy = Policy("p", limit, 1, algorithm="counter")
    admitted = run_timeline(policy, times)
    admitted_times = [t for t, ok in zip(times, admitted, strict=True) if ok]
    base = 1_800_000_000 * MICROS
    for end in admitted_times:
        in_sliding = sum(1 for a in admitted_times if end - policy.window_us < a <= end)
        assert in_sliding <= 2 * limit
        index = (base + end) // policy.window_us
        in_fixed = sum(1 for a in admitted_times if (base + a) // policy.window_us == index)
        assert in_fixed <= limit


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 8), times=timelines)
def test_counter_never_admits_what_the_log_would_deny_within_one_fixed_window(
    limit: int, times: list[int]
) -> None:
    """Inside the first fixed window the previous count is zero: both algorithms agree.
    (The fake clock starts on a whole second, so the first 1 s window is [0, MICROS).)"""
    first_window = [t for t in times if t < MICROS] or [0]
    log = run_timeline(Policy("p", limit, 1), first_window)
    counter = run_timeline(Policy("p", limit, 1, algorithm="counter"), first_window)
    assert counter == log


def test_log_decision_numbers() -> None:
    policy = Policy("search", 3, 60)
    allowed = log_decision(policy, True, count=2, oldest_us=10 * MICROS, now_us=20 * MICROS)
    assert (allowed.remaining, allowed.reset_s, allowed.retry_after_s) == (1, 50, 0)
    denied = log_decision(policy, False, count=3, oldest_us=10 * MICROS, now_us=69_500_000)
    assert (denied.remaining, denied.reset_s, denied.retry_after_s) == (0, 1, 1)


def test_counter_decision_numbers() -> None:
    policy = Policy("p", 10, 60, algorithm="counter")
    # 15 s into the window, 8 in the previous window weigh 6; 3 in this one: 1 left.
    decision = counter_decision(policy, True, prev=8, cur=3, now_us=60 * MICROS * 100 + 15 * MICROS)
    assert (decision.remaining, decision.reset_s) == (1, 45)
    # Full window: retry when the next window opens and this window's weight allows one.
    full = counter_decision(policy, False, prev=0, cur=10, now_us=60 * MICROS * 100 + 30 * MICROS)
    assert full.retry_after_s == 30 + 6


def test_memory_backend_stays_bounded() -> None:
    _, limiter = clocked_limiter(max_keys=10_000)
    policy = Policy("p", 5, 60)
    for index in range(1_000_000):
        limiter.check_now(f"ip:{index}", policy)
        if index % 100_000 == 0:
            assert len(limiter) <= 10_000
    assert len(limiter) <= 10_000


def test_idle_keys_are_evicted_without_reaching_the_cap() -> None:
    clock, limiter = clocked_limiter(max_keys=1_000_000)
    policy = Policy("p", 5, 1)
    for index in range(1000):
        limiter.check_now(f"old-{index}", policy)
    clock.now += 5
    for index in range(1000):
        limiter.check_now(f"new-{index}", policy)
    assert len(limiter) <= 1001


def test_concurrent_tasks_never_over_admit() -> None:
    limiter = MemoryRateLimiter()
    policy = Policy("p", 50, 60)

    async def burst() -> list[bool]:
        decisions = await asyncio.gather(*(limiter.check("k", policy) for _ in range(500)))
        return [d.allowed for d in decisions]

    assert sum(asyncio.run(burst())) == 50
