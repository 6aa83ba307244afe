"""The replica routing rule with an injected clock: lag bounds, transitions, re-admission,
ageing measurements, the read-your-writes window, and which errors mean "unreachable"."""

from __future__ import annotations

from collections import deque

import pytest
from psycopg import OperationalError
from psycopg.errors import AdminShutdown, QueryCanceled, SerializationFailure
from psycopg_pool import PoolTimeout

from edgemart.breaker import CircuitOpenError
from edgemart.readrouting import (
    AFTER_WRITE,
    DOWN,
    LAGGING,
    REPLICA,
    UNCHECKED,
    Reading,
    ReplicaPolicy,
    Sample,
    lag_bounds,
    unreachable,
)

MAX_LAG = 5.0
INTERVAL = 1.0
WINDOW = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(clock: Clock) -> ReplicaPolicy:
    return ReplicaPolicy(
        max_lag_s=MAX_LAG, check_interval_s=INTERVAL, write_window_s=WINDOW, clock=clock
    )


def check(
    policy: ReplicaPolicy,
    clock: Clock,
    *,
    primary: int | None,
    replayed: int,
    received: int | None = None,
    replay_age_s: float | None = 0.0,
    in_recovery: bool = True,
    breaker_closed: bool = True,
) -> str | None:
    """One check: the primary read at the clock's time, the replica right after. Returns the
    state entered, or None when it held."""
    started = policy.check_started()
    reading = Reading(
        primary_lsn=primary,
        primary_from=started,
        primary_to=clock(),
        in_recovery=in_recovery,
        replayed_lsn=replayed,
        received_lsn=replayed if received is None else received,
        replay_age_s=replay_age_s,
    )
    transition = policy.checked(reading, breaker_closed=breaker_closed)
    return None if transition is None else transition.state


def admitted(policy: ReplicaPolicy, clock: Clock) -> None:
    assert check(policy, clock, primary=100, replayed=100) == REPLICA
    assert policy.route() == REPLICA


def test_reads_go_to_the_primary_until_the_replica_is_measured(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    assert policy.route() == UNCHECKED
    assert policy.check_due()
    admitted(policy, clock)
    assert not policy.check_due()
    clock.now += INTERVAL
    assert policy.check_due()


def test_an_idle_primary_does_not_make_a_caught_up_replica_look_late(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    """Nothing committed for an hour: the replay timestamp is an hour old, the positions match."""
    assert check(policy, clock, primary=500, replayed=500, replay_age_s=3600.0) == REPLICA
    assert policy.lag_s == 0.0


def test_a_first_check_a_few_bytes_behind_waits_for_a_second_one(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    """On a quiet primary, WAL that is no transaction (a checkpoint record) may be just ahead
    of replay while the last commit is old: one check proves nothing either way."""
    assert check(policy, clock, primary=505, replayed=500, replay_age_s=3600.0) is None
    assert policy.route() == UNCHECKED
    clock.now += INTERVAL
    assert check(policy, clock, primary=505, replayed=505, replay_age_s=3601.0) == REPLICA


def test_a_paused_replica_is_skipped_once_it_is_surely_past_the_threshold(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    # The primary moves on at t+1 and the replica stops replaying.
    clock.now += INTERVAL
    assert check(policy, clock, primary=200, replayed=100, replay_age_s=1.0) is None
    entered = []
    for _ in range(10):
        clock.now += INTERVAL
        entered.append(check(policy, clock, primary=200, replayed=100, replay_age_s=None))
    # Lower bound: the replica lacks what the primary had at t+1, so it is more than
    # (now - (t+1)) behind; past 5 s from t+7 on, and reported once.
    assert entered == [None] * 5 + [LAGGING] + [None] * 4
    assert policy.route() == LAGGING


def test_re_admission_needs_half_the_threshold(policy: ReplicaPolicy, clock: Clock) -> None:
    admitted(policy, clock)
    clock.now += INTERVAL
    check(policy, clock, primary=200, replayed=100, replay_age_s=None)
    clock.now += 10
    assert check(policy, clock, primary=300, replayed=100, replay_age_s=None) == LAGGING
    # It has replayed what the primary had 4 s ago: within the threshold, not within half.
    clock.now += 4
    assert check(policy, clock, primary=400, replayed=300, replay_age_s=None) is None
    assert policy.route() == LAGGING
    clock.now += 1
    assert check(policy, clock, primary=400, replayed=400, replay_age_s=None) == REPLICA
    assert policy.route() == REPLICA


def test_an_admitted_replica_holds_between_half_and_the_whole_threshold(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    clock.now += 1
    check(policy, clock, primary=200, replayed=150, replay_age_s=None)
    clock.now += 3
    # It holds what the primary had 4 s ago (lsn 100), not what it had 3 s ago: 3 < lag <= 4.
    assert check(policy, clock, primary=300, replayed=180, replay_age_s=None) is None
    assert policy.state == REPLICA
    assert policy.lag_s == pytest.approx(4.0)
    assert policy.route() == REPLICA


def test_a_measurement_is_trusted_only_until_the_lag_could_have_passed_the_threshold(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    """No check for a while (an idle process, a frozen Lambda environment): lag grows by at
    most a second per second, so a replica measured 0 s behind is trusted for 5 s."""
    admitted(policy, clock)
    clock.now += MAX_LAG - 0.01
    assert policy.route() == REPLICA
    clock.now += 0.02
    assert policy.route() == UNCHECKED
    assert policy.state == REPLICA  # no transition: only this read's knowledge is too old
    assert check(policy, clock, primary=100, replayed=100) is None
    assert policy.route() == REPLICA


def test_an_unreachable_replica_is_down_until_a_check_with_a_closed_breaker(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    transition = policy.read_failed()
    assert transition is not None and (transition.previous, transition.state) == (REPLICA, DOWN)
    assert policy.read_failed() is None  # reported once
    assert policy.route() == DOWN
    clock.now += INTERVAL
    assert policy.check_failed() is None
    clock.now += INTERVAL
    # It answers again, but its breaker is still half-open: stay away.
    assert check(policy, clock, primary=100, replayed=100, breaker_closed=False) is None
    assert policy.route() == DOWN
    clock.now += INTERVAL
    assert check(policy, clock, primary=100, replayed=100) == REPLICA


def test_a_replica_back_but_behind_catches_up_before_it_is_used(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    policy.read_failed()
    clock.now += 20
    assert check(policy, clock, primary=900, replayed=100, replay_age_s=None) == LAGGING
    clock.now += INTERVAL
    assert check(policy, clock, primary=900, replayed=900, replay_age_s=None) == REPLICA


def test_without_the_primary_a_replica_that_applied_all_it_received_is_usable(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    """The primary is down: no writes can be missing beyond what the replica received."""
    assert check(policy, clock, primary=None, replayed=300, received=300, replay_age_s=90) == (
        REPLICA
    )
    clock.now += INTERVAL
    policy.read_failed()
    clock.now += INTERVAL
    # It answers, but has not applied all it received: kept from reads.
    entered = check(policy, clock, primary=None, replayed=300, received=400, replay_age_s=None)
    assert entered == LAGGING
    assert policy.route() == LAGGING


def test_a_server_not_in_recovery_is_caught_up(policy: ReplicaPolicy, clock: Clock) -> None:
    """DATABASE_REPLICA_URL naming the primary itself (or a promoted replica)."""
    assert check(policy, clock, primary=100, replayed=0, in_recovery=False) == REPLICA
    assert policy.lag_s == 0.0


def test_a_write_sends_reads_to_the_primary_for_the_window(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    clock.now += 0.1
    policy.wrote()
    assert policy.route() == AFTER_WRITE
    assert policy.in_write_window()
    # The replica stops replaying: the window runs its full length.
    clock.now += 1
    check(policy, clock, primary=200, replayed=100)
    assert policy.route() == AFTER_WRITE
    clock.now += WINDOW - 1 + 0.01
    assert policy.route() == REPLICA
    assert not policy.in_write_window()


def test_the_window_closes_once_the_replica_holds_a_position_read_after_the_write(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    clock.now += 0.5
    policy.wrote()
    # A check whose primary position was read before the write proves nothing about it.
    stale = policy.check_started() - 0.1
    policy.checked(Reading(150, stale, stale, True, 150, 150, 0.0))
    assert policy.route() == AFTER_WRITE
    clock.now += 0.2
    check(policy, clock, primary=200, replayed=190)  # read after the write, not replayed
    assert policy.route() == AFTER_WRITE
    clock.now += 0.2
    check(policy, clock, primary=260, replayed=200)  # replays the position read after it
    assert policy.route() == REPLICA


def test_a_later_write_extends_the_window(policy: ReplicaPolicy, clock: Clock) -> None:
    admitted(policy, clock)
    policy.wrote()
    clock.now += WINDOW - 1
    policy.wrote()
    clock.now += 2
    assert policy.route() == AFTER_WRITE


def test_lag_bounds_from_samples() -> None:
    samples = deque([Sample(10.0, 10.5, 100), Sample(11.0, 11.5, 200), Sample(12.0, 12.5, 300)])
    reading = Reading(300, 12.0, 12.5, True, 200, 300, 60.0)
    lower, upper = lag_bounds(13.0, reading, samples)
    # Holds lsn 200 (read from 11.0): lag <= 2.0; lacks lsn 300 (read by 12.5): lag > 0.5.
    assert (lower, upper) == (0.5, 2.0)
    # Behind every sample: lacks what the primary had by 10.5, so lag > 2.5; the last
    # replayed commit is 3.5 s old.
    assert lag_bounds(13.0, Reading(300, 12.0, 12.5, True, 50, 50, 3.5), samples) == (2.5, 3.5)
    # A reader in recovery that reports no replay position cannot be measured: trusted.
    assert lag_bounds(13.0, Reading(None, 12, 12, True, None, None, None), samples) == (0.0, 0.0)


def test_old_samples_are_forgotten_but_the_newest_old_one_is_kept(
    policy: ReplicaPolicy, clock: Clock
) -> None:
    admitted(policy, clock)
    clock.now += 1
    check(policy, clock, primary=200, replayed=100, replay_age_s=None)
    for _ in range(30):
        clock.now += 1
        check(policy, clock, primary=200, replayed=100, replay_age_s=None)
    assert policy.route() == LAGGING
    assert len(policy._samples) <= MAX_LAG + 2
    assert policy.lag_s is None or policy.lag_s > MAX_LAG


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OperationalError("connection refused"), True),  # no SQLSTATE: the client's own
        (PoolTimeout("no connection in 5 s"), True),
        (CircuitOpenError(10.0), True),
        (AdminShutdown("terminating connection due to administrator command"), True),
        (QueryCanceled("canceling statement due to statement timeout"), False),
        (SerializationFailure("canceling statement due to conflict with recovery"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_errors_mean_unreachable(error: BaseException, expected: bool) -> None:
    assert unreachable(error) is expected
