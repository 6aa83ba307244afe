"""A lease as one process sees it: when to ask the database again, and until when this process
may act as the holder. Pure: times in (the process's monotonic clock, passed by the caller),
decisions out; gateway.leadership does the asking.

The database decides who holds the lease, by its own clock (sql/acquire_lease.sql): an
expiry `ttl` after it granted or renewed it. The holder cannot read that clock, so it counts
on its own: a grant answered to a request sent at `sent_at` was made no earlier than that, so
the lease lasts at least until `sent_at + ttl` on any clock that keeps time with the
database's. The holder leads until `sent_at + ttl - margin` and not a moment longer unless a
renewal succeeds first; the margin absorbs clocks running at slightly different rates and
the time between checking `leading(now)` and acting on it. A standby can take the lease only
after the database's expiry, so the two never lead at once (fencing by time).

Timings, all fractions of the ttl (`LeaseTimings`): the holder renews every third of it,
retries a failed renewal every fifteenth until its deadline, and stops leading a fifth of it
before the lease would end; a standby asks every third of it, or as the holder's lease ends
when that comes sooner, so it takes over about one ttl after the holder's last renewal.
"""

from __future__ import annotations

from dataclasses import dataclass

INFINITY = float("inf")


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    ttl_s: float

    def __post_init__(self) -> None:
        if not 0 < self.ttl_s < INFINITY:
            raise ValueError(f"a lease needs a positive, finite ttl, got {self.ttl_s!r}")

    @property
    def renew_every_s(self) -> float:
        """From a successful renewal's request to the next."""
        return self.ttl_s / 3

    @property
    def retry_every_s(self) -> float:
        """A standby's wait between two requests (at most)."""
        return self.ttl_s / 3

    @property
    def error_retry_s(self) -> float:
        """The holder's wait after a renewal failed; also the shortest wait a standby takes."""
        return self.ttl_s / 15

    @property
    def margin_s(self) -> float:
        """How long before the lease's end, counted from the request, the holder stops."""
        return self.ttl_s / 5


@dataclass(frozen=True, slots=True)
class Answer:
    """What the database answered a request for the lease."""

    held: bool
    """This process holds the lease now (taken or renewed)."""
    term: int | None = None
    """The lease's term: the same across renewals, raised each time it is taken afresh."""
    holder: str | None = None
    """Who holds the lease (this process when `held`)."""
    expires_in_s: float | None = None
    """Seconds until the lease ends unrenewed, by the database's clock."""


class LeaseState:
    """Where one process stands with one lease. Every method takes the current time from the
    caller; nothing here reads a clock."""

    def __init__(self, timings: LeaseTimings) -> None:
        self.timings = timings
        self.leading_until = -INFINITY
        """The end of this process's leadership: in the future while it leads, else the
        moment it last stopped (or -inf)."""
        self.term: int | None = None
        """The term of the lease this process holds or last held."""
        self.next_attempt_at = -INFINITY
        """When to ask the database next (at once, at first)."""

    def leading(self, now: float) -> bool:
        """Whether this process may act as the holder at `now`."""
        return now < self.leading_until

    def due(self, now: float) -> bool:
        """Whether it is time to ask the database."""
        return now >= self.next_attempt_at

    def wake_at(self, now: float) -> float:
        """The next moment something is to be done: a request, or stopping at the deadline."""
        if self.leading(now):
            return min(self.next_attempt_at, self.leading_until)
        return self.next_attempt_at

    def attempt_timeout(self, now: float) -> float:
        """How long a request sent at `now` may take: the holder's must end by its deadline
        (and leave time for another try), a standby's by its next turn."""
        if self.leading(now):
            return min(self.leading_until - now, self.timings.renew_every_s)
        return self.timings.retry_every_s

    def answered(self, sent_at: float, now: float, answer: Answer) -> None:
        """The database answered, at `now`, the request sent at `sent_at`."""
        sent_at = min(sent_at, now)
        if not answer.held:
            self._stop(now)
            self.next_attempt_at = now + self._standby_wait(answer.expires_in_s)
            return
        until = sent_at + self.timings.ttl_s - self.timings.margin_s
        if until <= now:  # the answer came too late to act on: ask again at once
            self._stop(now)
            self.next_attempt_at = now
            return
        self.leading_until = until
        self.term = answer.term
        self.next_attempt_at = sent_at + self.timings.renew_every_s

    def failed(self, now: float) -> None:
        """A request got no answer (the database is unreachable, or it timed out). The holder
        keeps leading until its deadline and retries soon; a standby waits its turn."""
        if self.leading(now):
            self.next_attempt_at = now + self.timings.error_retry_s
        else:
            self.next_attempt_at = now + self.timings.retry_every_s

    def released(self, now: float) -> None:
        """This process gave the lease up (it stops): it leads no more, and would ask at once
        if it asked again."""
        self._stop(now)
        self.next_attempt_at = now

    def _stop(self, now: float) -> None:
        self.leading_until = min(self.leading_until, now)

    def _standby_wait(self, expires_in_s: float | None) -> float:
        """Until the holder's lease ends, if that is sooner than the next turn; never less
        than `error_retry_s`, so a holder that renews late is not asked about in a loop."""
        timings = self.timings
        if expires_in_s is None or not expires_in_s < timings.retry_every_s:
            return timings.retry_every_s
        return max(expires_in_s, timings.error_retry_s)
