"""The retry policy, with injected sleep, jitter and clock (no real waiting)."""

import asyncio

import pytest
from psycopg import OperationalError
from psycopg.errors import DeadlockDetected, QueryCanceled, SerializationFailure, UniqueViolation

from edgemart.retry import RetryPolicy, is_transient


class Recorder:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def policy(recorder: Recorder, **options: float) -> RetryPolicy:
    return RetryPolicy(sleep=recorder.sleep, clock=recorder.clock, jitter=lambda: 1.0, **options)  # type: ignore[arg-type]


def failing(*errors: Exception, result: str = "ok"):  # type: ignore[no-untyped-def]
    remaining = list(errors)
    calls = []

    async def operation() -> str:
        calls.append(1)
        if remaining:
            raise remaining.pop(0)
        return result

    return operation, calls


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (SerializationFailure(), True),
        (DeadlockDetected(), True),
        (OperationalError("server closed the connection unexpectedly"), True),
        (QueryCanceled(), False),
        (UniqueViolation(), False),
        (ValueError(), False),
    ],
)
def test_only_transient_errors_are_retried(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_backoff_doubles_with_full_jitter_and_succeeds() -> None:
    recorder = Recorder()
    operation, calls = failing(SerializationFailure(), DeadlockDetected())
    assert asyncio.run(policy(recorder).run(operation)) == "ok"
    assert len(calls) == 3 and recorder.sleeps == [0.05, 0.1]
    jittered = RetryPolicy(jitter=lambda: 0.25)
    assert jittered.delay(3) == pytest.approx(0.25 * 0.4)


def test_gives_up_after_the_attempts() -> None:
    recorder = Recorder()
    operation, calls = failing(*(SerializationFailure() for _ in range(5)))
    with pytest.raises(SerializationFailure):
        asyncio.run(policy(recorder, attempts=3).run(operation))
    assert len(calls) == 3


def test_gives_up_when_the_total_time_would_pass() -> None:
    recorder = Recorder()
    operation, calls = failing(*(SerializationFailure() for _ in range(5)))
    with pytest.raises(SerializationFailure):
        asyncio.run(policy(recorder, attempts=10, base_delay_s=0.5, total_s=1.0).run(operation))
    assert recorder.sleeps == [0.5] and len(calls) == 2


def test_non_transient_is_raised_at_once() -> None:
    recorder = Recorder()
    operation, calls = failing(QueryCanceled())
    with pytest.raises(QueryCanceled):
        asyncio.run(policy(recorder).run(operation))
    assert len(calls) == 1 and recorder.sleeps == []
