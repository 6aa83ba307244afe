"""Pure sliding-window arithmetic, shared by every backend. Times are integer microseconds.

Two algorithms:

- **log** (default, exact): every admitted request's timestamp is kept; a request at `now` is
  admitted while fewer than `limit` admitted requests lie in `(now - window, now]`. So in any
  interval of length `window`, at most `limit` requests are admitted. Memory is O(limit) per
  key.
- **counter** (sliding-window counter, as Upstash and `limits` call it): two fixed-window
  counts, the previous one weighted by the part of it still inside the sliding window:
  `estimate = prev * (window - elapsed) / window + cur`; admitted while `estimate + 1 <= limit`.
  O(1) memory per key. Error bound: each aligned fixed window admits at most `limit`, so any
  interval of length `window` (which spans at most two of them) admits at most `2 * limit`;
  the excess over `limit` is `prev * elapsed / window` at worst, reached only when the
  previous window's requests were bunched at its end. With evenly spread traffic it admits
  what the log would.

Backends only keep state and decide admission; the numbers a client sees (remaining quota,
reset, Retry-After) are computed here from the state they report, so every backend answers
alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

MICROS = 1_000_000

Algorithm = Literal["log", "counter"]
KeyKind = Literal["ip", "user"]


@dataclass(frozen=True, slots=True)
class Policy:
    """`limit` requests per `window_s` seconds for one route group."""

    name: str
    limit: int
    window_s: int
    key: KeyKind = "ip"
    algorithm: Algorithm = "log"
    window_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed: read on every check.
        object.__setattr__(self, "window_us", self.window_s * MICROS)


class Decision(NamedTuple):
    """A NamedTuple rather than a dataclass: one is built per check, and it is cheaper."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int
    fallback: bool = False


# `Decision(...)` goes through the generated Python `__new__`; the tuple constructor is a
# single C call, and the hot path builds one Decision per request.
_new_decision = tuple.__new__


def ceil_seconds(micros: int) -> int:
    return max(0, -(-micros // MICROS))


def log_decision(
    policy: Policy, allowed: bool, count: int, oldest_us: int, now_us: int
) -> Decision:
    """From the log's state after the check: `count` admitted in the window (this request
    included if admitted) and the oldest of them. Written for speed: it runs on every check."""
    limit = policy.limit
    # oldest - now first: two timestamps make a small number, and small ints are cheaper.
    reset = -(-(oldest_us - now_us + policy.window_us) // MICROS) if count else 0
    if reset < 0:
        reset = 0
    retry_after = 0 if allowed else (reset if reset > 1 else 1)
    remaining = limit - count if count < limit else 0
    return _new_decision(Decision, (allowed, limit, remaining, reset, retry_after, False))


def counter_admits(policy: Policy, prev: int, cur: int, elapsed_us: int) -> bool:
    """`prev * (W - elapsed) / W + cur + 1 <= limit`, in integers so every backend agrees."""
    window = policy.window_us
    return prev * (window - elapsed_us) + (cur + 1) * window <= policy.limit * window


def counter_elapsed(policy: Policy, now_us: int) -> int:
    return now_us % policy.window_us


def counter_decision(policy: Policy, allowed: bool, prev: int, cur: int, now_us: int) -> Decision:
    """From the counters after the check (`cur` includes this request if admitted)."""
    window = policy.window_us
    elapsed = counter_elapsed(policy, now_us)
    used = prev * (window - elapsed) + cur * window
    remaining = max(0, (policy.limit * window - used) // window)
    return Decision(
        allowed=allowed,
        limit=policy.limit,
        remaining=remaining,
        reset_s=ceil_seconds(window - elapsed),
        retry_after_s=0
        if allowed
        else max(1, ceil_seconds(_counter_wait(policy, prev, cur, elapsed))),
    )


def _counter_wait(policy: Policy, prev: int, cur: int, elapsed: int) -> int:
    """Microseconds until a request would be admitted if nothing else arrived."""
    window, limit = policy.window_us, policy.limit
    if cur + 1 <= limit and prev > 0:
        # Wait within this window until the previous window's weight has decayed enough:
        # prev * (W - e) <= (limit - cur - 1) * W.
        needed = window - (limit - cur - 1) * window // prev
        return max(1, needed - elapsed)
    # Wait for the next window, where this window's count becomes the weighted one.
    wait = window - elapsed
    if cur > 0:
        wait += max(0, window - (limit - 1) * window // cur)
    return wait
