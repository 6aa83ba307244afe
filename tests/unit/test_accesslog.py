from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from edgemart.accesslog import log_access, should_log
from tests.conftest import LogCapture

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


def scope_for(path: str) -> dict[str, Any]:
    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("")

    app = Starlette(routes=[Route("/products/{product_id}", endpoint)])
    return {"type": "http", "method": "GET", "path": path, "app": app, "state": {}}


def test_an_unmatched_request_logs_its_path(captured_logs: LogCapture) -> None:
    log_access(scope_for("/no/such/" + "x" * 500), 404, 1.0, ())
    log_access(scope_for("/products/abc"), 200, 1.0, ())
    unmatched, matched = captured_logs.lines("request")
    assert unmatched["route"] == "<unmatched>"
    assert unmatched["path"] == ("/no/such/" + "x" * 500)[:200]
    assert matched["route"] == "/products/{product_id}" and "path" not in matched


def test_the_line_names_the_request_s_tenant(captured_logs: LogCapture) -> None:
    from edgemart.tenancy import TENANT_STATE_KEY
    from tests.support.tenants import ACME

    log_access(scope_for("/products/abc"), 200, 1.0, ())  # single mode: default
    tenant_scope = scope_for("/products/abc")
    tenant_scope["state"][TENANT_STATE_KEY] = ACME
    log_access(tenant_scope, 200, 1.0, ())
    single, acme = captured_logs.lines("request")
    assert (single["tenant"], acme["tenant"]) == ("default", "acme")
