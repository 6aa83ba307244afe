"""The Lambda entry point: a cold start counted once per environment, the Lambda context on the
invocation's log lines, edge purges and metrics written at the end of every invocation."""

from typing import Any

import pytest

from edgemart import metrics
from edgemart.changes import Changes
from edgemart.invocation import lambda_entry_point
from edgemart.logging import logger
from edgemart.services import Services
from edgemart.settings import Settings
from tests.conftest import LogCapture
from tests.contract.lambda_harness import FakeLambdaContext


def settings() -> Services:
    return Services.from_settings(Settings(metrics_namespace="unit-ns"))


class RecordingPurge:
    """An `EdgePurge` that notes what it was asked, for the order of the end of an invocation."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def purge(self, changes: Changes) -> None:
        self.calls.append("purge")

    def flush(self, timeout_s: float = 5.0) -> bool:
        self.calls.append("flush")
        return True

    async def aclose(self) -> None:
        self.calls.append("aclose")


def cold_starts(function: str) -> float:
    return metrics.count(metrics.COLD_STARTS, function=function)


def test_only_the_first_invocation_is_a_cold_start(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(event: Any, context: Any) -> str:
        return "ok"

    entry_point = lambda_entry_point("unit_cold", handler, settings)
    assert [entry_point({}, FakeLambdaContext()) for _ in range(3)] == ["ok"] * 3
    assert cold_starts("unit_cold") == 1
    assert '"cold_starts":[1.0]' in capsys.readouterr().out


def test_provisioned_concurrency_is_no_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "provisioned-concurrency")
    entry_point = lambda_entry_point("unit_provisioned", lambda event, context: None, settings)
    entry_point({}, FakeLambdaContext())
    assert cold_starts("unit_provisioned") == 0


def test_unreadable_settings_do_not_hide_the_handlers_error() -> None:
    def handler(event: Any, context: Any) -> None:
        raise LookupError("the handler's own error")

    def broken_settings() -> Services:
        raise ValueError("bad configuration")

    entry_point = lambda_entry_point("unit_broken", handler, broken_settings)
    with pytest.raises(LookupError, match="own error"):
        entry_point({}, FakeLambdaContext())


def test_queued_edge_purges_are_sent_before_the_environment_can_freeze(
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[str] = []
    services = settings()
    services.edge_purge = RecordingPurge(calls)

    def handler(event: Any, context: Any) -> str:
        services.edge_purge.purge(Changes())  # type: ignore[union-attr]
        return "ok"

    def failing(event: Any, context: Any) -> str:
        raise LookupError("failed after its write")

    lambda_entry_point("unit_purge", handler, lambda: services)({}, FakeLambdaContext())
    assert calls == ["purge", "flush"]
    assert "unit_purge" in capsys.readouterr().out  # the metrics followed
    with pytest.raises(LookupError):
        lambda_entry_point("unit_purge_raised", failing, lambda: services)({}, FakeLambdaContext())
    assert calls == ["purge", "flush", "flush"]


def test_lines_of_an_invocation_carry_its_lambda_context(captured_logs: LogCapture) -> None:
    def handler(event: Any, context: Any) -> None:
        logger.info("inside")

    entry_point = lambda_entry_point("unit_log_keys", handler, settings)
    first, second = (FakeLambdaContext(aws_request_id=f"request-{n}") for n in (1, 2))
    entry_point({}, first)
    entry_point({}, second)
    lines = captured_logs.lines("inside")
    assert [line["function_request_id"] for line in lines] == ["request-1", "request-2"]
    assert [line["cold_start"] for line in lines] == [True, False]
    for line in lines:
        assert line["function_name"] == first.function_name
        assert line["function_arn"] == first.invoked_function_arn
        assert line["function_memory_size"] == first.memory_limit_in_mb
    logger.info("between invocations")
    [between] = captured_logs.lines("between invocations")
    assert not set(between) & {"cold_start", "function_name", "function_request_id"}


def test_a_key_given_with_the_line_is_kept(captured_logs: LogCapture) -> None:
    def handler(event: Any, context: Any) -> None:
        logger.info("own key", extra={"function_name": "given"})

    lambda_entry_point("unit_log_own_key", handler, settings)({}, FakeLambdaContext())
    assert captured_logs.lines("own key")[0]["function_name"] == "given"


def test_powertools_log_event_setting_logs_each_event(
    captured_logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    entry_point = lambda_entry_point("unit_log_event", lambda event, context: None, settings)
    entry_point({"probe": "logged"}, FakeLambdaContext())
    [line] = [line for line in captured_logs.lines() if line["message"] == {"probe": "logged"}]
    assert line["function_request_id"] == FakeLambdaContext().aws_request_id


def test_metrics_switched_off_by_powertools_settings_are_not_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    entry_point = lambda_entry_point("unit_metrics_off", lambda event, context: None, settings)
    entry_point({}, FakeLambdaContext())
    assert cold_starts("unit_metrics_off") == 1  # counted, not written
    assert capsys.readouterr().out == ""
