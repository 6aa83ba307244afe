"""Where a public read goes: the read replica while it keeps up, otherwise the primary.

Only public pages read through here (home, search, popular searches, store and product
pages: `services.reads.connection()`), and only on a cache miss, so a cache hit never touches
it. Everything that must see the latest committed state (a purchase, stock, idempotency keys,
wallets, orders, a seller's or an admin's pages, auth-adjacent reads) takes
`services.primary` directly (docs/decisions/0034-read-replicas.md lists every read site).

`ReplicaPolicy` is the rule, pure and run by an injected clock; `ReadRouting` does the I/O:
it hands out connections and measures the replica at most every `REPLICA_CHECK_INTERVAL_S`,
in the background of a read that finds a measurement due (never a query per read, none at
all in a process that serves no misses).

**Measuring lag.** A check reads the primary's WAL position, then how far the replica has
replayed. Each check's primary position is kept with when it was read, and those samples
bound the replica's lag without trusting commit timestamps (on an idle primary
`now() - pg_last_xact_replay_timestamp()` grows although nothing is missing):

- the replica holds everything the primary had at a sample whose position it has replayed:
  lag <= now - the newest such sample (also <= the age of the last replayed commit);
- it misses something the primary had at a sample whose position it has not reached:
  lag > now - the oldest such sample.

A replica is skipped (`lagging`) once the lower bound passes `REPLICA_MAX_LAG_S`, and taken
back once the upper bound is within half of it: never skipped or re-admitted on a guess, and
no flapping around the threshold. A measurement ages: lag grows by at most a second per
second, so a replica measured `h` seconds behind is trusted for `max_lag - h` seconds; after
that, reads go to the primary (`unchecked`) until the next check. A replica that cannot be
reached (a check or a read fails to connect) is `down` at once; it is taken back by a check
once its circuit breaker has closed again.

**Read your writes.** `wrote()` (called when this process commits a write, and when it is told
of another process's) sends this process's public reads to the primary for
`READ_YOUR_WRITES_S`: a write drops cached pages, and their next load must not come from a
replica that has not replayed the write yet, or the old page would be cached again for the
route's TTL. The window closes sooner once a check shows the replica has replayed a primary
position read after the write.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from psycopg import OperationalError
from psycopg_pool import PoolTimeout

from edgemart import metrics
from edgemart.breaker import CircuitOpenError
from edgemart.db import UNAVAILABLE_ERRORS, Connection, Database
from edgemart.logging import logger

if TYPE_CHECKING:
    from edgemart.settings import Settings

State = Literal["unchecked", "replica", "lagging", "down"]
"""What the last measurement said of the replica: `replica` (reads may use it)."""

REPLICA: Final = "replica"
LAGGING: Final = "lagging"
DOWN: Final = "down"
UNCHECKED: Final = "unchecked"
AFTER_WRITE: Final = "after_write"
FAILOVER: Final = "failover"
ROUTES = (REPLICA, LAGGING, DOWN, UNCHECKED, AFTER_WRITE, FAILOVER)
"""Where a read went (`read_routes`' `route`): the replica, or the primary and why."""

MAX_SAMPLES = 256
"""Primary positions kept at most (a bound should the check interval be set very low)."""

# The replica-unreachable SQLSTATEs: connection exceptions, and a server shutting down or
# starting up. Errors the replica answered otherwise (a query cancelled by a recovery
# conflict, a statement timeout) say nothing about whether to route around it.
_UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` means the replica could not be reached (route around it), as opposed to
    an answer from it (an SQL error, a timeout, a recovery conflict)."""
    if isinstance(exc, PoolTimeout | CircuitOpenError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = exc.sqlstate
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _UNREACHABLE_SQLSTATES


# ---- The rule (pure) ----


@dataclass(frozen=True, slots=True)
class Reading:
    """What one check read. The primary's WAL position (None: the primary did not answer),
    read between `primary_from` and `primary_to` on the policy's clock; then the replica's."""

    primary_lsn: int | None
    primary_from: float
    primary_to: float
    in_recovery: bool
    replayed_lsn: int | None
    received_lsn: int | None
    replay_age_s: float | None
    """Seconds since the last replayed transaction committed on the primary (None: none
    replayed since the replica started)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """The primary was at `lsn` at some moment between `read_from` and `read_to`."""

    read_from: float
    read_to: float
    lsn: int


@dataclass(frozen=True, slots=True)
class Transition:
    previous: State
    state: State
    lag_s: float | None
    """The lag bound that decided it: the lower bound into `lagging`, else the upper bound."""


def lag_bounds(now: float, reading: Reading, samples: deque[Sample]) -> tuple[float, float | None]:
    """(lower, upper) bounds of the replica's lag in seconds at `now`; upper None: unknown."""
    if not reading.in_recovery:  # not a standby (a promoted replica, or the primary itself)
        return 0.0, 0.0
    replayed = reading.replayed_lsn
    if replayed is None:
        # In recovery yet no replay position: not a WAL-streaming standby (a reader
        # replicated by its storage may report none). Nothing to measure: trusted.
        return 0.0, 0.0
    upper = None if reading.replay_age_s is None else max(0.0, reading.replay_age_s)
    lower = 0.0
    for sample in samples:
        if sample.lsn <= replayed:
            bound = max(0.0, now - sample.read_from)
            upper = bound if upper is None else min(upper, bound)
        else:
            lower = max(lower, now - sample.read_to)
    if reading.primary_lsn is None and reading.received_lsn is not None:
        # The primary did not answer: all the replica can say is whether it has applied
        # everything it received.
        if replayed >= reading.received_lsn:
            upper = 0.0
    return lower, upper


@dataclass(eq=False, repr=False)
class ReplicaPolicy:
    """The routing state of one replica in one process, fed by checks and failed reads.

    `route()` is the hot part (a clock read and two comparisons); the rest runs once per
    check or per failure."""

    _: KW_ONLY
    max_lag_s: float
    check_interval_s: float
    write_window_s: float
    clock: Callable[[], float] = time.monotonic
    state: State = field(default="unchecked", init=False)
    lag_s: float | None = field(default=None, init=False)
    """The last check's upper bound of the lag (None: unknown or never checked)."""
    _samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES), init=False)
    _trusted_until: float = field(default=-math.inf, init=False)
    _next_check_at: float = field(default=-math.inf, init=False)
    _primary_until: float = field(default=-math.inf, init=False)
    _last_write_at: float = field(default=-math.inf, init=False)

    # -- reads --

    def route(self) -> str:
        """Where the next read goes: `replica`, or the reason it goes to the primary."""
        now = self.clock()
        if now < self._primary_until:
            return AFTER_WRITE
        state = self.state
        if state == REPLICA and now >= self._trusted_until:
            return UNCHECKED
        return state

    def check_due(self) -> bool:
        return self.clock() >= self._next_check_at

    def wrote(self) -> None:
        """A write committed (here, or elsewhere and this process was told): read from the
        primary for the write window, or until the replica is seen to hold the write."""
        now = self.clock()
        self._last_write_at = now
        self._primary_until = max(self._primary_until, now + self.write_window_s)

    def in_write_window(self) -> bool:
        return self.clock() < self._primary_until

    # -- measurements --

    def check_started(self) -> float:
        """A check begins now (the next one is due an interval later); returns the time, to
        be the `primary_from` of its reading."""
        now = self.clock()
        self._next_check_at = now + self.check_interval_s
        return now

    def checked(self, reading: Reading, *, breaker_closed: bool = True) -> Transition | None:
        """Apply one check's reading; the transition it caused, if any. A replica that was
        down is taken back only once its circuit breaker is closed (`breaker_closed`): while
        the breaker is half-open, reads would be refused and bounce between the databases."""
        now = self.clock()
        if reading.primary_lsn is not None:
            self._samples.append(
                Sample(reading.primary_from, reading.primary_to, reading.primary_lsn)
            )
            self._forget_old_samples(now)
        lower, upper = lag_bounds(now, reading, self._samples)
        self.lag_s = upper
        self._trusted_until = now + (self.max_lag_s - upper) if upper is not None else -math.inf
        if self._primary_until > now and self._holds_last_write(reading):
            self._primary_until = now
        return self._enter(self._next_state(lower, upper, breaker_closed), lower, upper)

    def check_failed(self) -> Transition | None:
        """The replica did not answer a check: down."""
        return self._down()

    def read_failed(self) -> Transition | None:
        """A read could not reach the replica: down until a check takes it back."""
        return self._down()

    def _down(self) -> Transition | None:
        self.lag_s = None
        self._trusted_until = -math.inf
        return self._enter(DOWN, 0.0, None)

    def _next_state(self, lower: float, upper: float | None, breaker_closed: bool) -> State:
        if not breaker_closed:
            return DOWN
        if lower > self.max_lag_s:
            return LAGGING
        if upper is not None and upper <= self.max_lag_s / 2:
            return REPLICA
        # Not proven either way: an admitted replica stays (hysteresis), any other is kept
        # from reads until it is proven close enough. A first check without an earlier
        # primary position to compare with proves little: wait for the next one.
        if self.state == UNCHECKED and len(self._samples) < 2:
            return UNCHECKED
        return REPLICA if self.state == REPLICA else LAGGING

    def _enter(self, state: State, lower: float, upper: float | None) -> Transition | None:
        previous = self.state
        if state == previous:
            return None
        self.state = state
        return Transition(previous, state, lower if state == LAGGING else upper)

    def _holds_last_write(self, reading: Reading) -> bool:
        """Whether the replica has replayed a primary position read after the last write."""
        if not reading.in_recovery:
            return True
        replayed = reading.replayed_lsn
        if replayed is None:
            return False
        return any(
            sample.read_from > self._last_write_at and sample.lsn <= replayed
            for sample in self._samples
        )

    def _forget_old_samples(self, now: float) -> None:
        """Keep the samples younger than the lag threshold and the newest older one: an
        older sample bounds nothing the newest older one does not (positions only grow)."""
        horizon = now - self.max_lag_s
        samples = self._samples
        while len(samples) >= 2 and samples[1].read_to < horizon:
            samples.popleft()


# ---- The I/O ----

PRIMARY_POSITION_SQL = b"SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn"
REPLICA_POSITION_SQL = b"""
SELECT pg_is_in_recovery() AS in_recovery,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed,
       (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint AS received,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS replay_age_s
"""


class ReadRouting:
    """Connections for public reads: the replica's or the primary's, as the policy says.

    Without a replica every read is the primary's and nothing is measured."""

    def __init__(
        self,
        primary: Database,
        replica: Database | None = None,
        policy: ReplicaPolicy | None = None,
    ) -> None:
        if (replica is None) != (policy is None):
            raise ValueError("a replica is routed by a policy, and a policy needs a replica")
        self.primary = primary
        self.replica = replica
        self.policy = policy
        self._check: asyncio.Task[None] | None = None
        self._routes: dict[str, metrics.Series] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, primary: Database, replica: Database | None
    ) -> ReadRouting:
        if replica is None:
            return cls(primary)
        policy = ReplicaPolicy(
            max_lag_s=settings.replica_max_lag_s,
            check_interval_s=settings.replica_check_interval_s,
            write_window_s=settings.read_your_writes_s,
        )
        return cls(primary, replica, policy)

    def wrote(self) -> None:
        """This process committed a write, or was told another did: read from the primary
        for `READ_YOUR_WRITES_S` (less once the replica is seen to hold it)."""
        if self.policy is not None:
            self.policy.wrote()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection for a public read. A replica that cannot be reached is marked down
        and this read is served by the primary; one lost mid-read is marked down too, and
        the error goes up to the read's retry, which then lands on the primary."""
        replica, policy = self.replica, self.policy
        if replica is None or policy is None:
            async with self.primary.connection() as conn:
                yield conn
            return
        route = policy.route()
        if policy.check_due():
            self._start_check()
        async with AsyncExitStack() as stack:
            if route == REPLICA:
                try:
                    conn = await stack.enter_async_context(replica.connection())
                except UNAVAILABLE_ERRORS as exc:
                    self._replica_failed(exc)
                    route = FAILOVER
            if route != REPLICA:
                conn = await stack.enter_async_context(self.primary.connection())
            self._count(route)
            try:
                yield conn
            except Exception as exc:
                if route == REPLICA and unreachable(exc):
                    self._replica_failed(exc)
                raise

    def _replica_failed(self, exc: BaseException) -> None:
        if self.policy is not None:
            self._announce(self.policy.read_failed(), exc)

    def _count(self, route: str) -> None:
        series = self._routes.get(route)
        if series is None:
            series = self._routes[route] = metrics.series(metrics.READ_ROUTES, route=route)
        series.add()

    # -- checks --

    def _start_check(self) -> None:
        check = self._check
        if check is not None and not check.done():
            if check.get_loop() is asyncio.get_running_loop():
                return  # one check at a time
        self._check = asyncio.ensure_future(self.check())

    async def check(self) -> None:
        """Measure the replica once and apply the result (what a due check runs in the
        background; tests call it directly)."""
        replica, policy = self.replica, self.policy
        if replica is None or policy is None:
            return
        started = policy.check_started()
        primary_lsn: int | None = None
        try:
            async with self.primary.connection() as conn:
                row = await (await conn.execute(PRIMARY_POSITION_SQL)).fetchone()
            primary_lsn = None if row is None else row["lsn"]
        except Exception as exc:  # the replica's own figures still say something
            logger.debug("replica check: primary position unavailable: %r", exc)
        read_to = policy.clock()
        try:
            async with replica.connection() as conn:
                row = await (await conn.execute(REPLICA_POSITION_SQL)).fetchone()
            if row is None:  # a query of constants always returns its row
                raise LookupError("the replica position query returned no row")
        except Exception as exc:
            self._announce(policy.check_failed(), exc)
            return
        reading = Reading(
            primary_lsn=primary_lsn,
            primary_from=started,
            primary_to=read_to,
            in_recovery=row["in_recovery"],
            replayed_lsn=row["replayed"],
            received_lsn=row["received"],
            replay_age_s=row["replay_age_s"],
        )
        breaker = replica.breaker
        closed = breaker is None or breaker.state == "closed"
        self._announce(policy.checked(reading, breaker_closed=closed))

    def _announce(self, transition: Transition | None, cause: BaseException | None = None) -> None:
        """Log and count a transition, once: a state that holds is not repeated."""
        if transition is None:
            return
        if transition.previous == UNCHECKED and transition.state == REPLICA:
            return  # a process's first measurement, as expected: nothing to report
        metrics.record(metrics.REPLICA_TRANSITIONS, entered=transition.state)
        extra: dict[str, Any] = {"replica_state": transition.state}
        if transition.lag_s is not None:
            extra["replica_lag_s"] = round(transition.lag_s, 3)
        if cause is not None:
            extra["cause"] = repr(cause)[:200]
        if transition.state == REPLICA:
            logger.info(
                "read replica %s -> replica: public reads use it", transition.previous, extra=extra
            )
        else:
            logger.warning(
                "read replica %s -> %s: public reads go to the primary",
                transition.previous,
                transition.state,
                extra=extra,
            )

    async def aclose(self) -> None:
        check, self._check = self._check, None
        if (
            check is not None
            and not check.done()
            and check.get_loop() is asyncio.get_running_loop()
        ):
            check.cancel()
            try:
                await check
            except (asyncio.CancelledError, Exception):  # closing: nothing to report
                pass
