"""The circuit breaker's state machine, driven by an injected clock (no sleeps)."""

import pytest

from edgemart.breaker import CircuitBreaker, CircuitOpenError
from tests.conftest import FakeClock


def breaker(clock: FakeClock, **options: float) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "success_threshold": 2, "open_timeout_s": 30.0}
    settings.update(options)
    return CircuitBreaker("db", clock=clock, **settings)  # type: ignore[arg-type]


def opened(clock: FakeClock) -> CircuitBreaker:
    """A breaker that three failures in a row just opened."""
    circuit = breaker(clock)
    for _ in range(3):
        circuit.record_failure()
    assert circuit.state == "open"
    return circuit


def test_opens_after_consecutive_failures_and_refuses() -> None:
    clock = FakeClock(100.0)
    circuit = breaker(clock)
    for _ in range(2):
        circuit.before_call()
        circuit.record_failure()
    assert circuit.state == "closed"
    circuit.record_success()  # a success resets the run
    for _ in range(3):
        circuit.record_failure()
    assert circuit.state == "open"
    clock.now += 10
    with pytest.raises(CircuitOpenError) as refused:
        circuit.before_call()
    assert refused.value.retry_after_s == pytest.approx(20)


def test_half_open_probe_then_close() -> None:
    clock = FakeClock(100.0)
    circuit = opened(clock)
    clock.now += 30
    assert circuit.state == "half_open"
    circuit.before_call()  # the one probe
    with pytest.raises(CircuitOpenError):
        circuit.before_call()  # a second caller while the probe is out
    circuit.record_success()
    assert circuit.state == "half_open"  # needs two successes
    circuit.before_call()
    circuit.record_success()
    assert circuit.state == "closed"


def test_a_failed_probe_opens_again_for_a_full_timeout() -> None:
    clock = FakeClock(100.0)
    circuit = opened(clock)
    clock.now += 30
    circuit.before_call()
    circuit.record_failure()
    assert circuit.state == "open"
    clock.now += 29
    assert circuit.state == "open"
    clock.now += 1
    assert circuit.state == "half_open"


def test_failure_rate_over_the_window() -> None:
    clock = FakeClock(100.0)
    circuit = breaker(clock, failure_threshold=100, failure_rate=0.5, window_s=60, min_calls=10)
    for index in range(10):
        clock.now += 1
        (circuit.record_failure if index % 2 else circuit.record_success)()
    assert circuit.state == "open"  # 5 of 10 failed


def test_old_calls_leave_the_window() -> None:
    clock = FakeClock(100.0)
    circuit = breaker(clock, failure_threshold=100, failure_rate=0.5, window_s=60, min_calls=10)
    for _ in range(9):
        circuit.record_failure()
    clock.now += 61
    for _ in range(9):
        circuit.record_success()
    circuit.record_failure()
    assert circuit.state == "closed"  # 1 of the last 10 failed


def test_state_changes_and_time_open_are_recorded_per_breaker() -> None:
    from edgemart import metrics

    clock = FakeClock(100.0)
    circuit = CircuitBreaker("metrics_db", failure_threshold=1, success_threshold=1, clock=clock)

    def changes(state: str) -> float:
        return metrics.count(metrics.CIRCUIT_STATE_CHANGES, breaker="metrics_db", state=state)

    before = {state: changes(state) for state in ("open", "half_open", "closed")}
    open_before = metrics.count(metrics.CIRCUIT_OPEN_TIME, breaker="metrics_db")
    circuit.record_failure()  # opens
    clock.now += 45
    assert circuit.state == "half_open"  # 45 s open
    circuit.before_call()
    circuit.record_failure()  # opens again
    clock.now += 31
    circuit.before_call()  # half-open after 31 s: the probe goes through
    circuit.record_success()  # closes
    assert circuit.state == "closed"
    assert {state: changes(state) - before[state] for state in before} == {
        "open": 2,
        "half_open": 2,
        "closed": 1,
    }
    assert metrics.count(metrics.CIRCUIT_OPEN_TIME, breaker="metrics_db") - open_before == 76
