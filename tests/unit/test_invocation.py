"""The Lambda entry point: a cold start counted once per environment, metrics written at the
end of every invocation."""

from typing import Any

import pytest

from edgemart import metrics
from edgemart.invocation import lambda_entry_point
from edgemart.settings import Settings
from tests.contract.lambda_harness import FakeLambdaContext


def settings() -> Settings:
    return Settings(metrics_namespace="unit-ns")


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

    def broken_settings() -> Settings:
        raise ValueError("bad configuration")

    entry_point = lambda_entry_point("unit_broken", handler, broken_settings)
    with pytest.raises(LookupError, match="own error"):
        entry_point({}, FakeLambdaContext())
