"""The standard middleware stack of `build_app`, driven through real ASGI requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgemart.appfactory import build_app
from edgemart.logging import logger
from edgemart.services import Services
from tests.conftest import LogCapture, settings_for
from tests.support.asgi import raw_get

pytestmark = pytest.mark.anyio


async def boom(request: Request) -> Response:
    raise RuntimeError("SELECT secret FROM vault WHERE password = 'hunter2'")


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


async def slow_log(request: Request) -> JSONResponse:
    await asyncio.sleep(float(request.query_params["delay"]))
    logger.info("inside the route")
    return JSONResponse({"ok": True})


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def app_with(routes: list[Route], **setting_overrides: object) -> Starlette:
    services = Services.from_settings(settings_for(None, **setting_overrides))
    return build_app(routes, services=services)


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def make_app(**setting_overrides: object) -> httpx.AsyncClient:
    routes = [
        Route("/boom", boom),
        Route("/echo", echo_length, methods=["POST"]),
        Route("/slow-log", slow_log),
        Route("/ok", ok),
        Route("/items/{item_id}", ok),
    ]
    return client_for(app_with(routes, **setting_overrides))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_app() as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "https://edgemart.dev/problems/" + code.replace("_", "-")
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_incoming_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/ok", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert response.headers["x-request-id"] == "abc.DEF_123-x"


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "semi;colon"])
async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/ok", headers={"X-Request-ID": bad})
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_with_a_newline_is_replaced() -> None:
    """httpx refuses to send a newline in a header, so drive the ASGI app directly."""
    app = app_with([Route("/ok", ok)])
    sent = await raw_get(app, "/ok", [(b"x-request-id", b"evil\nInjected: yes")])
    headers = dict(sent[0]["headers"])  # type: ignore[arg-type]
    assert headers[b"x-request-id"] not in (b"evil\nInjected: yes", b"evil")
    assert b"\n" not in headers[b"x-request-id"]


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404, "not_found")


async def test_wrong_method_is_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/ok")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


async def test_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * 65536)
    assert response.status_code == 200
    assert response.json() == {"length": 65536}


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/echo", content=b"x" * 65537), 413, "payload_too_large")


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield b"x" * 8192

    response = await client.post("/echo", content=chunks())
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


async def test_unexpected_error_is_500_without_internals(
    client: httpx.AsyncClient, captured_logs: LogCapture
) -> None:
    response = await client.get("/boom")
    body = assert_problem(response, 500, "internal_error")
    text = response.text
    assert "SELECT" not in text and "hunter2" not in text and "Traceback" not in text
    assert set(body) == {"type", "title", "status", "code", "request_id"}
    errors = [line for line in captured_logs.lines() if line["level"] == "ERROR"]
    assert errors and "hunter2" in str(errors[0]["exception"])
    assert errors[0]["request_id"] == response.headers["x-request-id"]


class TeapotError(Exception):
    pass


class BrokenHandlerError(Exception):
    pass


async def teapot_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse({"handled": type(exc).__name__}, status_code=418)


async def broken_handler(request: Request, exc: Exception) -> Response:
    raise RuntimeError("the handler itself failed")


async def raise_in_middleware_gate(scope: dict[str, object]) -> None:
    raise TeapotError


async def test_registered_handler_renders_errors_raised_outside_a_route() -> None:
    """The request-context middleware is the app's error boundary: an error raised before
    any route runs (here by the gate) still goes to its registered handler."""
    app = app_with([Route("/ok", ok)])
    app.add_exception_handler(TeapotError, teapot_handler)
    stack = app.build_middleware_stack()
    stack.gate = raise_in_middleware_gate  # type: ignore[attr-defined]
    app.middleware_stack = stack
    async with client_for(app) as client:
        response = await client.get("/ok")
    assert response.status_code == 418
    assert response.json() == {"handled": "TeapotError"}
    assert response.headers["x-request-id"]


async def test_a_failing_handler_becomes_a_500_problem(captured_logs: LogCapture) -> None:
    async def raises(request: Request) -> Response:
        raise BrokenHandlerError

    app = app_with([Route("/raises", raises)])
    app.add_exception_handler(BrokenHandlerError, broken_handler)
    async with client_for(app) as client:
        response = await client.get("/raises")
    assert_problem(response, 500, "internal_error")
    errors = [line for line in captured_logs.lines() if line["level"] == "ERROR"]
    assert errors and "the handler itself failed" in str(errors[0]["exception"])


@pytest.mark.parametrize("key", [500, Exception, 418])
def test_handlers_the_boundary_cannot_honour_are_refused(key: int | type[Exception]) -> None:
    app = app_with([Route("/ok", ok)])
    app.add_exception_handler(key, teapot_handler)
    with pytest.raises(ValueError):
        app.build_middleware_stack()


async def test_concurrent_requests_keep_their_own_request_id_in_logs(
    client: httpx.AsyncClient, captured_logs: LogCapture
) -> None:
    """Two requests interleave inside the route; each line carries its own id."""
    first, second = await asyncio.gather(
        client.get("/slow-log", params={"delay": "0.2"}, headers={"X-Request-ID": "first"}),
        client.get("/slow-log", params={"delay": "0.05"}, headers={"X-Request-ID": "second"}),
    )
    assert (first.status_code, second.status_code) == (200, 200)
    inside = captured_logs.lines("inside the route")
    assert [line["request_id"] for line in inside] == ["second", "first"]
    assert [line["correlation_id"] for line in inside] == ["second", "first"]
    assert logger.thread_safe_get_current_keys().get("request_id") is None


async def test_access_line_fields(captured_logs: LogCapture) -> None:
    async with make_app(access_log_sample_rate=1.0) as client:
        await client.get("/items/42", headers={"X-Request-ID": "rid-1"})
    (line,) = captured_logs.lines("request")
    assert line["method"] == "GET"
    assert line["route"] == "/items/{item_id}"
    assert line["status"] == 200
    assert line["request_id"] == "rid-1"
    assert line["client_ip"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)
    assert (line["cache"], line["rate_limit"]) == ("-", "-")


async def test_sampling_keeps_every_error_and_about_the_share_of_successes(
    captured_logs: LogCapture,
) -> None:
    successes, errors, rate = 2000, 200, 0.1
    async with make_app(access_log_sample_rate=rate) as client:
        for index in range(successes):
            await client.get("/ok")
            if index % (successes // errors) == 0:
                await client.get("/nope")
    lines = captured_logs.lines("request")
    logged_errors = [line for line in lines if line["status"] == 404]
    logged_successes = [line for line in lines if line["status"] == 200]
    assert len(logged_errors) == errors
    # Binomial(2000, 0.1): mean 200, sd 13.4; six sd either side fails about once in 10^9 runs.
    assert 200 - 81 <= len(logged_successes) <= 200 + 81


async def test_slow_successes_are_always_logged(captured_logs: LogCapture) -> None:
    async with make_app(access_log_sample_rate=0.0, slow_request_ms=30.0) as client:
        await client.get("/slow-log", params={"delay": "0.06"})
        await client.get("/ok")
    assert [line["route"] for line in captured_logs.lines("request")] == ["/slow-log"]


async def test_problem_bodies_are_json_documents(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert json.loads(response.content)["title"] == "Not found"


PUBLIC = "public, max-age=0, s-maxage=60"
ERROR_STATUSES = [400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 431, 500, 502, 503, 504]


async def status_route(request: Request) -> Response:
    """Answers the status it is asked for, marked cacheable as a careless handler might."""
    status = int(request.path_params["status"])
    return Response(b"{}", status_code=status, headers={"Cache-Control": PUBLIC})


def header_app(**setting_overrides: object) -> httpx.AsyncClient:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/status/{status:int}", status_route, methods=methods),
        Route("/boom", boom),
        Route("/echo", echo_length, methods=["POST"]),
    ]
    return client_for(app_with(routes, **setting_overrides))


@pytest.mark.parametrize("status", ERROR_STATUSES)
async def test_every_error_is_no_store_whatever_the_handler_said(status: int) -> None:
    async with header_app() as client:
        response = await client.get(f"/status/{status}")
    assert response.status_code == status
    assert response.headers.get_list("cache-control") == ["no-store"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_every_answer_to_an_unsafe_method_is_no_store(method: str) -> None:
    async with header_app() as client:
        response = await client.request(method, "/status/200")
    assert response.status_code == 200
    assert response.headers.get_list("cache-control") == ["no-store"]


@pytest.mark.parametrize("status", [200, 204, 304, 301])
async def test_a_safe_success_keeps_its_cache_control(status: int) -> None:
    async with header_app() as client:
        response = await client.get(f"/status/{status}")
    assert response.headers.get_list("cache-control") == [PUBLIC]


async def test_errors_raised_outside_a_route_are_no_store_and_nosniff() -> None:
    async with header_app() as client:
        responses = [
            await client.get("/nope"),  # the router's 404
            await client.get("/echo"),  # the router's 405
            await client.post("/echo", content=b"x" * 65537),  # the body limit
            await client.get("/boom"),  # the 500 boundary
        ]
    assert [response.status_code for response in responses] == [404, 405, 413, 500]
    for response in responses:
        assert response.headers.get_list("cache-control") == ["no-store"]
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_every_response_is_nosniff() -> None:
    async with header_app() as client:
        for path in ("/status/200", "/status/304", "/status/404"):
            response = await client.get(path)
            assert response.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_without_cors_origins_there_is_no_cors() -> None:
    async with header_app() as client:
        preflight = await client.options(
            "/echo",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        simple = await client.get("/status/200", headers={"Origin": "https://shop.example"})
    assert preflight.status_code == 405
    for response in (preflight, simple):
        assert not [name for name in response.headers if name.startswith("access-control-")]
        assert "origin" not in response.headers.get("vary", "").lower()


async def test_a_response_that_already_varies_keeps_its_vary_and_adds_origin() -> None:
    async def varies(request: Request) -> Response:
        return Response(b"{}", headers={"Vary": "Accept-Encoding"})

    app = app_with([Route("/varies", varies)], cors_allow_origins=("https://shop.example",))
    async with client_for(app) as client:
        response = await client.get("/varies", headers={"Origin": "https://shop.example"})
    assert response.headers.get_list("vary") == ["Accept-Encoding, Origin"]
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
