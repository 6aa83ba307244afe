"""The lease state machine with a clock of the test's own: acquiring, renewing, losing by
time, a standby's turns and taking over, late answers and clock edge cases; and a simulated
fleet (the database's rule in Python, processes whose clocks run at other rates) in which two
processes never lead at once while clocks stay within the margin, and do once they do not."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from gateway.lease import Answer, LeaseState, LeaseTimings

TTL = 15.0
HELD = Answer(held=True, term=1, holder="me", expires_in_s=TTL)


def state() -> LeaseState:
    return LeaseState(LeaseTimings(TTL))


def test_timings_are_fractions_of_the_ttl() -> None:
    timings = LeaseTimings(TTL)
    assert (timings.renew_every_s, timings.retry_every_s) == (5.0, 5.0)
    assert (timings.margin_s, timings.error_retry_s) == (3.0, 1.0)
    # A standby takes over within the ttl and one retry: under 30 s at the default.
    assert timings.ttl_s + timings.retry_every_s < 30


@pytest.mark.parametrize("ttl", [0.0, -1.0, math.inf, math.nan])
def test_a_lease_needs_a_positive_finite_ttl(ttl: float) -> None:
    with pytest.raises(ValueError, match="positive, finite ttl"):
        LeaseTimings(ttl)


def test_a_new_process_does_not_lead_and_asks_at_once() -> None:
    lease = state()
    assert not lease.leading(0.0)
    assert lease.due(-1e9) and lease.due(0.0)
    assert lease.term is None


def test_acquiring_leads_until_the_ttl_less_the_margin_counted_from_the_request() -> None:
    lease = state()
    lease.answered(100.0, 100.4, HELD)
    assert lease.term == 1
    assert lease.leading(100.4) and lease.leading(111.999)
    assert not lease.leading(112.0)  # 100 + 15 - 3, not counted from the answer (100.4)
    assert not lease.due(104.9) and lease.due(105.0)  # renews a third of the ttl on
    assert lease.wake_at(100.4) == 105.0


def test_each_renewal_moves_the_deadline_on() -> None:
    lease = state()
    lease.answered(0.0, 0.1, HELD)
    for sent in (5.0, 10.0, 15.0, 20.0):
        assert lease.due(sent) and lease.leading(sent)
        lease.answered(sent, sent + 0.2, HELD)
    assert lease.leading(31.9) and not lease.leading(32.0)
    assert lease.term == 1


def test_failed_renewals_are_retried_until_the_deadline_then_it_stops_leading() -> None:
    lease = state()
    lease.answered(0.0, 0.1, HELD)
    attempts = []
    now = 5.0
    while lease.leading(now):
        if lease.due(now):
            attempts.append(now)
            lease.failed(now)
        now = lease.wake_at(now)
    assert attempts == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert now == 12.0 and not lease.leading(12.0)  # woken at the deadline itself
    assert lease.wake_at(12.0) == lease.next_attempt_at == 12.0  # then it asks as a standby


def test_a_renewal_succeeding_before_the_deadline_keeps_it_leading() -> None:
    lease = state()
    lease.answered(0.0, 0.1, HELD)
    lease.failed(5.0)
    lease.failed(6.0)
    lease.answered(7.0, 7.3, HELD)
    assert lease.leading(18.9) and not lease.leading(19.0)
    assert lease.next_attempt_at == 12.0


def test_a_refused_renewal_stops_it_leading_at_once() -> None:
    lease = state()
    lease.answered(0.0, 0.1, HELD)
    lease.answered(5.0, 5.1, Answer(held=False, term=2, holder="other", expires_in_s=14.9))
    assert not lease.leading(5.1)
    assert lease.leading_until == 5.1
    assert lease.next_attempt_at == 10.1


@pytest.mark.parametrize(
    ("expires_in", "wait"),
    [
        (None, 5.0),  # nobody's lease to wait for (a row created meanwhile)
        (14.0, 5.0),  # the holder just renewed: the next turn
        (5.0, 5.0),
        (2.5, 2.5),  # it ends before the next turn: ask as it ends
        (0.3, 1.0),  # never sooner than error_retry_s
        (-4.0, 1.0),  # a lease the database saw end (a clock that went back)
    ],
)
def test_a_standby_asks_every_turn_or_as_the_holders_lease_ends(
    expires_in: float | None, wait: float
) -> None:
    lease = state()
    lease.answered(50.0, 50.2, Answer(held=False, term=3, holder="other", expires_in_s=expires_in))
    assert not lease.leading(50.2)
    assert lease.next_attempt_at == pytest.approx(50.2 + wait)
    assert lease.wake_at(50.2) == lease.next_attempt_at


def test_a_standby_takes_over_as_the_holders_lease_ends() -> None:
    lease = state()
    lease.answered(0.0, 0.1, Answer(held=False, term=1, holder="dead", expires_in_s=3.0))
    assert lease.next_attempt_at == pytest.approx(3.1)
    lease.answered(3.1, 3.2, Answer(held=True, term=2, holder="me", expires_in_s=TTL))
    assert lease.leading(3.2) and lease.term == 2
    assert lease.leading_until == pytest.approx(3.1 + 12.0)


def test_an_unanswered_standby_waits_its_turn() -> None:
    lease = state()
    lease.failed(10.0)
    assert not lease.leading(10.0)
    assert lease.next_attempt_at == 15.0


def test_an_answer_too_late_to_act_on_is_not_leading_and_asks_again_at_once() -> None:
    lease = state()
    lease.answered(0.0, 12.5, HELD)  # granted, but its deadline (12) passed on the way back
    assert not lease.leading(12.5)
    assert lease.due(12.5)
    lease.answered(0.0, 12.0, HELD)  # exactly at the deadline: not leading either
    assert not lease.leading(12.0)


def test_an_answer_dated_before_its_request_counts_from_the_answer() -> None:
    """A clock the caller passes that went back (injected clocks, or a bug): the deadline is
    never later than one ttl less the margin after the moment the answer was handled."""
    lease = state()
    lease.answered(10.0, 9.0, HELD)
    assert lease.leading_until == 9.0 + 12.0
    assert lease.next_attempt_at == 9.0 + 5.0


def test_a_holders_attempt_must_end_by_its_deadline() -> None:
    lease = state()
    assert lease.attempt_timeout(0.0) == 5.0  # a standby: until its next turn
    lease.answered(0.0, 0.1, HELD)
    assert lease.attempt_timeout(5.0) == 5.0
    assert lease.attempt_timeout(10.0) == 2.0
    assert lease.attempt_timeout(11.9) == pytest.approx(0.1)
    assert lease.attempt_timeout(12.0) == 5.0  # no longer leading: a standby's


def test_releasing_stops_leading_and_a_later_ask_is_at_once() -> None:
    lease = state()
    lease.answered(0.0, 0.1, HELD)
    lease.released(3.0)
    assert not lease.leading(3.0) and lease.due(3.0)
    assert lease.leading_until == 3.0


def test_a_term_taken_again_is_the_new_term() -> None:
    lease = state()
    lease.answered(0.0, 0.1, HELD)
    lease.answered(5.0, 5.1, Answer(held=True, term=4, holder="me", expires_in_s=TTL))
    assert lease.term == 4 and lease.leading(5.1)


# ---- A simulated fleet ----


@dataclass
class SimulatedDatabase:
    """acquire_lease()'s rule, by the database's clock (the simulation's real time)."""

    holder: str | None = None
    term: int = 0
    expires_at: float = -math.inf

    def acquire(self, holder: str, now: float, ttl: float) -> Answer:
        if self.holder == holder or self.expires_at <= now:
            if not (self.holder == holder and self.expires_at > now):
                self.term += 1
            self.holder, self.expires_at = holder, now + ttl
            return Answer(True, self.term, holder, ttl)
        return Answer(False, self.term, self.holder, self.expires_at - now)


@dataclass
class SimulatedProcess:
    name: str
    rate: float = 1.0
    """Local seconds per real second."""
    offset: float = 0.0
    reachable_until: float = math.inf
    """From then on its requests get no answer (a network partition)."""
    dies_at: float = math.inf
    lease: LeaseState = field(default_factory=lambda: LeaseState(LeaseTimings(TTL)))

    def clock(self, t: float) -> float:
        return self.offset + self.rate * t


def simulate(
    processes: list[SimulatedProcess], until: float, latency: float = 0.05, dt: float = 0.01
) -> tuple[list[float], dict[float, list[str]]]:
    """Run the fleet in steps of `dt` real seconds; requests reach the database `latency`
    after they are sent and are answered as late again. Returns the real times at which two
    processes led at once, and who led when (sampled each second)."""
    database = SimulatedDatabase()
    pending: list[tuple[float, SimulatedProcess, float]] = []  # (answer at, process, sent)
    overlaps: list[float] = []
    leaders: dict[float, list[str]] = {}
    for step in range(int(until / dt)):
        t = step * dt
        for process in processes:
            local = process.clock(t)
            in_flight = any(p is process for _, p, _ in pending)
            if t < process.dies_at and not in_flight and process.lease.due(local):
                pending.append((t + 2 * latency, process, local))
        for entry in [e for e in pending if e[0] <= t]:
            pending.remove(entry)
            _, process, sent = entry
            if t >= process.dies_at:
                continue
            local = process.clock(t)
            if t - latency >= process.reachable_until:
                process.lease.failed(local)
            else:
                answer = database.acquire(process.name, t - latency, TTL)
                process.lease.answered(sent, local, answer)
        leading = [p.name for p in processes if t < p.dies_at and p.lease.leading(p.clock(t))]
        if len(leading) > 1:
            overlaps.append(t)
        if step % int(1 / dt) == 0:
            leaders[round(t)] = leading
    return overlaps, leaders


def test_a_fleet_has_one_leader_and_a_standby_takes_over_from_a_dead_one() -> None:
    fleet = [
        SimulatedProcess("a", dies_at=40.0),
        SimulatedProcess("b", rate=1.1, offset=1e6),
        SimulatedProcess("c", rate=0.9, offset=-50.0),
    ]
    overlaps, leaders = simulate(fleet, until=90.0)
    assert overlaps == []
    assert all(who == ["a"] for t, who in leaders.items() if 1 <= t < 40)
    took_over = min(t for t, who in leaders.items() if t > 40 and who)
    assert took_over - 40 <= TTL + 1  # about one ttl after a's last renewal
    assert len({tuple(who) for t, who in leaders.items() if t >= took_over}) == 1


@pytest.mark.parametrize(("rate", "overlap"), [(1.0, False), (0.85, False), (0.75, True)])
def test_a_partitioned_leader_stops_before_a_standby_takes_over_unless_its_clock_is_too_slow(
    rate: float, overlap: bool
) -> None:
    """Fencing by time holds while the leader's clock runs no more than margin/ttl (20%)
    slower than the database's: at 0.75 it still leads when the standby takes over, which
    the simulation sees (so it could see it happen in the other cases)."""
    fleet = [
        SimulatedProcess("a", rate=rate, reachable_until=20.0),
        SimulatedProcess("b"),
    ]
    overlaps, leaders = simulate(fleet, until=60.0)
    assert bool(overlaps) is overlap
    assert leaders[10] == ["a"]
    assert leaders[59] == ["b"]
