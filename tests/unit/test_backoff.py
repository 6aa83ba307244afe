from edgemart.backoff import Backoff
from tests.conftest import FakeClock, LogCapture


def test_a_failure_leaves_the_backend_alone_for_retry_after_s_then_tries_again() -> None:
    clock = FakeClock()
    backoff = Backoff("backend failed (%r)", retry_after_s=2.0, clock=clock)
    assert backoff.ready()
    backoff.failed(OSError("down"))
    assert not backoff.ready()
    clock.now += 1.999
    assert not backoff.ready()
    clock.now += 0.001
    assert backoff.ready()


def test_each_failure_starts_the_interval_again() -> None:
    clock = FakeClock()
    backoff = Backoff("backend failed (%r)", retry_after_s=2.0, clock=clock)
    backoff.failed(OSError("down"))
    clock.now += 1.5
    backoff.failed(OSError("still down"))
    clock.now += 1.5
    assert not backoff.ready()


def test_failures_are_logged_with_their_args_at_most_once_per_log_every_s(
    captured_logs: LogCapture,
) -> None:
    backoff = Backoff("backend %s failed (%r)", retry_after_s=0.0, log_every_s=3600.0)
    for _ in range(3):
        backoff.failed("lookup", OSError("down"))
    lines = [line["message"] for line in captured_logs.lines()]
    assert lines == ["backend lookup failed (OSError('down')) (1 times since the last report)"]
