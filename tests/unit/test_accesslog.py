import pytest

from edgemart.accesslog import should_log

RULE = {"sample_rate": 0.01, "slow_ms": 1000.0}


@pytest.mark.parametrize("status", [400, 404, 413, 429, 500, 503])
def test_errors_are_always_logged(status: int) -> None:
    assert should_log(status, 1.0, draw=0.999, **RULE)


def test_slow_successes_are_always_logged() -> None:
    assert should_log(200, 1000.0, draw=0.999, **RULE)
    assert not should_log(200, 999.9, draw=0.999, **RULE)


@pytest.mark.parametrize("status", [200, 201, 304])
def test_fast_successes_are_kept_only_below_the_sample_rate(status: int) -> None:
    assert should_log(status, 1.0, draw=0.0099, **RULE)
    assert not should_log(status, 1.0, draw=0.01, **RULE)


def test_rate_zero_keeps_no_fast_success_and_one_keeps_all() -> None:
    assert not should_log(200, 1.0, sample_rate=0.0, slow_ms=1000.0, draw=0.0)
    assert should_log(200, 1.0, sample_rate=1.0, slow_ms=1000.0, draw=0.999999)
