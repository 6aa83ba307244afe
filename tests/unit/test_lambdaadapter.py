"""The API Gateway adapter answers every event exactly as Mangum does: the scope the app sees,
the answer API Gateway gets, the errors."""

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
from starlette.types import Message, Receive, Scope, Send

from edgemart.lambdaadapter import TEXT_MIME_TYPES, ApiGatewayAdapter
from tests.contract.lambda_harness import EVENTS, FakeLambdaContext, load_event

HEADER_SETS: dict[str, list[tuple[bytes, bytes]]] = {
    "json": [(b"content-type", b"application/json"), (b"x-request-id", b"abc")],
    "repeated and cookies": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"Vary", b"Origin"),
        (b"vary", b"Accept-Encoding"),
        (b"set-cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ],
    "binary": [(b"content-type", b"image/png")],
    "no content type": [(b"etag", b'"x"')],
}
BODIES = {"text": "héllo".encode(), "not utf-8": b"\xff\xfe", "empty": b""}


def echo_app(headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """An app answering with `headers` and `body`; what it was asked goes into `seen`."""
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive()
        seen.append(
            {
                **{k: v for k, v in scope.items() if k not in ("headers", "aws.event")},
                "headers": [(name, value) for name, value in scope["headers"]],
                "aws.event": scope["aws.event"] is not None,
                "body": request["body"],
            }
        )
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body[:1], "more_body": True})
        await send({"type": "http.response.body", "body": body[1:]})

    app.seen = seen  # type: ignore[attr-defined]
    return app


def variants() -> Iterator[dict[str, Any]]:
    """Every v2 fixture, and one with what Mangum treats specially: cookies, a host with a port,
    the forwarded scheme and port, an encoded path, a base64 body."""
    for path in sorted(EVENTS.glob("apigw_v2_*.json")):
        yield load_event(path.name)
    special = load_event("apigw_v2_post_purchases.json")
    special["headers"] = {
        "Host": "shop.example:8443",
        "X-Forwarded-Proto": "http",
        "Content-Type": "application/json",
    }
    special["requestContext"]["http"]["path"] = "/stores/caf%C3%A9%2Fx"
    special["body"] = base64.b64encode(b'{"quantity": 1}').decode()
    yield special
    forwarded = load_event("apigw_v2_get_home.json")
    forwarded["headers"] = {"host": "api.example", "x-forwarded-port": "8080"}
    forwarded.pop("cookies")
    forwarded["body"] = ""
    yield forwarded
    yield load_event("apigw_v1_get_home.json")
    yield load_event("apigw_v1_post_purchases.json")


@pytest.fixture
def loop() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.usefixtures("loop")
@pytest.mark.parametrize("headers", HEADER_SETS.values(), ids=HEADER_SETS.keys())
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_every_event_is_answered_as_mangum_answers_it(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    for event in variants():
        ours, theirs = echo_app(headers, body), echo_app(headers, body)
        context = FakeLambdaContext()
        answer = ApiGatewayAdapter(ours)(json.loads(json.dumps(event)), context)
        expected = Mangum(theirs, lifespan="off")(json.loads(json.dumps(event)), context)
        assert answer == expected
        assert list(answer) == list(expected)
        assert ours.seen == theirs.seen


def test_text_mime_types_are_mangums() -> None:
    assert list(TEXT_MIME_TYPES) == DEFAULT_TEXT_MIME_TYPES


@pytest.mark.usefixtures("loop")
def test_an_error_before_the_response_is_a_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("escaped the app")

    answer = ApiGatewayAdapter(app)(load_event("apigw_v2_get_home.json"), FakeLambdaContext())
    assert answer["statusCode"] == 500
    assert answer["body"] == "Internal Server Error"
    assert answer["headers"]["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.usefixtures("loop")
def test_an_error_after_the_response_keeps_the_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        raise LookupError("after the response")

    answer = ApiGatewayAdapter(app)(load_event("apigw_v2_get_home.json"), FakeLambdaContext())
    assert (answer["statusCode"], answer["body"]) == (200, "{}")


@pytest.mark.usefixtures("loop")
def test_after_the_body_receive_waits_for_the_response_then_disconnects() -> None:
    messages: list[Message] = []

    async def listener(receive: Receive) -> None:
        messages.append(await receive())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        waiting = asyncio.get_running_loop().create_task(listener(receive))
        await asyncio.sleep(0)
        assert not waiting.done()  # the response has not been sent yet
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        await waiting

    ApiGatewayAdapter(app)(load_event("apigw_v2_get_home.json"), FakeLambdaContext())
    assert [message["type"] for message in messages] == ["http.request", "http.disconnect"]


@pytest.mark.usefixtures("loop")
def test_an_event_no_handler_claims_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not an event"):
        ApiGatewayAdapter(echo_app([], b""))(
            load_event("eventbridge_scheduled.json"), FakeLambdaContext()
        )
