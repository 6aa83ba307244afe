"""API Gateway events in, the ASGI app's responses out: how a Lambda invocation reaches the
Starlette app.

An HTTP API (payload 2.0) event, what the template's `HttpApi` sends every function, is turned
into the ASGI scope here and the response into API Gateway's answer, as Mangum's `HTTPGateway`
does it (headers lower-cased, the cookies joined into `Cookie`, the path unquoted; duplicate
response headers joined with commas, `Set-Cookie` as `cookies`, a text body as text and any
other base64-encoded). Every other event (REST API v1, an ALB, Lambda@Edge) is Mangum's: its
handler classes build the scope and the answer, Mangum imported on the first such event.

Either way the app runs through one `Exchange` (the request body in, the response out, then
`http.disconnect`, as Mangum's `HTTPCycle`), on the thread's event loop. Mangum builds the v2
scope twice, keeps the request body in an `asyncio.Queue` and the response in a `BytesIO` and
logs every response on `mangum.http`: it costs a small answer about twice what this module
does (bench/lambda_overhead/RESULTS.md, decision 0048). Importing Mangum, which only other
events do now, cost a cold environment's first invocation 2.6 ms.

Lifespan is never run (edgemart opens its pools lazily); an exception that escapes the app is
logged and answered 500 `Internal Server Error` (text), as Mangum does, unless the response was
complete (Mangum did the same for a `BaseException`, a `KeyboardInterrupt` say, which goes on
up here).
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Scope

from edgemart.logging import logger

if TYPE_CHECKING:
    from mangum.types import LambdaConfig

Event = dict[str, Any]
Answer = dict[str, Any]

TEXT_MIME_TYPES: Final = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/vnd.api+json",
    "application/vnd.oai.openapi",
)
"""Content types answered as text (Mangum's `DEFAULT_TEXT_MIME_TYPES`); anything else is
base64-encoded."""

_ASGI: Final = {"version": "3.0", "spec_version": "2.0"}
_SERVER_ERROR: Final = (500, [(b"content-type", b"text/plain; charset=utf-8")])


class Exchange:
    """One request's ASGI messages: `receive` gives the body once, then `http.disconnect` once
    the response is complete; `send` keeps the response."""

    __slots__ = ("_body", "_done", "status", "headers", "chunks", "complete")

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self._done: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.complete = False

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self.complete:
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
            await self._done
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.status:
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif kind == "http.response.body" and self.status and not self.complete:
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                if self._done is not None and not self._done.done():
                    self._done.set_result(None)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    @property
    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            logger.exception("unhandled error in the ASGI app")
            if not self.complete:
                self.status, self.headers = _SERVER_ERROR
                self.chunks = [b"Internal Server Error"]
                self.complete = True


def event_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop, set up if it has none (as Mangum's): the loop a Lambda
    environment keeps from one invocation to the next, with the pools opened on it."""
    try:
        return asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop


def exchanged(app: ASGIApp, scope: Scope, body: bytes) -> Exchange:
    exchange = Exchange(body)
    event_loop().run_until_complete(exchange.run(app, scope))
    return exchange


# ---- HTTP API payload 2.0 ----


def is_http_api(event: Event) -> bool:
    return event.get("version") == "2.0" and "requestContext" in event


def http_api_scope(event: Event, context: Any) -> dict[str, Any]:
    """The ASGI scope of an HTTP API (2.0) event, as Mangum's `HTTPGateway` makes it."""
    http = event["requestContext"]["http"]
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    cookies = event.get("cookies")
    if cookies:
        headers["cookie"] = "; ".join(cookies)
    host = headers.get("host", "mangum")
    if ":" in host:
        host, _, port = host.rpartition(":")
    else:
        port = headers.get("x-forwarded-port", 80)
    return {
        "type": "http",
        "method": http["method"],
        "http_version": "1.1",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "path": unquote(http["path"]) if http["path"] else "/",
        "raw_path": None,
        "root_path": "",
        "scheme": headers.get("x-forwarded-proto", "https"),
        "query_string": event.get("rawQueryString", "").encode(),
        "server": (host, int(port)),
        "client": (http["sourceIp"], 0),
        "asgi": _ASGI,
        "aws.event": event,
        "aws.context": context,
    }


def request_body(event: Event) -> bytes:
    body = event.get("body") or b""
    if event.get("isBase64Encoded", False):
        return base64.b64decode(body)
    return body if isinstance(body, bytes) else body.encode()


def http_api_answer(exchange: Exchange) -> Answer:
    """API Gateway's answer for an HTTP API (2.0) event, as Mangum's `HTTPGateway` makes it."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in exchange.headers:
        name, value = raw_name.decode().lower(), raw_value.decode()
        if name == "set-cookie":
            cookies.append(value)
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    headers.setdefault("content-type", "application/json")
    body, is_base64 = answer_body(exchange.body, headers["content-type"])
    answer: Answer = {"statusCode": exchange.status, "body": body, "headers": headers}
    if cookies:
        answer["cookies"] = cookies
    answer["isBase64Encoded"] = is_base64
    return answer


def answer_body(body: bytes, content_type: str) -> tuple[str, bool]:
    """(body, base64-encoded): text for a text content type that is UTF-8, else base64."""
    if not body:
        return "", False
    if any(text in content_type for text in TEXT_MIME_TYPES):
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode(), True


# ---- The handler ----


class ApiGatewayAdapter:
    """`adapter(event, context)`: the app's answer to one API Gateway event."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._config: LambdaConfig | None = None

    def __call__(self, event: Event, context: Any) -> Answer:
        if is_http_api(event):
            scope = http_api_scope(event, context)
            return http_api_answer(exchanged(self.app, scope, request_body(event)))
        return self._by_mangum(event, context)

    def _by_mangum(self, event: Event, context: Any) -> Answer:
        """Any other event, scope and answer made by the Mangum handler that claims it."""
        from mangum.adapter import DEFAULT_TEXT_MIME_TYPES, HANDLERS
        from mangum.types import LambdaConfig

        if self._config is None:
            self._config = LambdaConfig(
                api_gateway_base_path="/",
                text_mime_types=list(DEFAULT_TEXT_MIME_TYPES),
                exclude_headers=[],
            )
        for handler_class in HANDLERS:
            if handler_class.infer(event, context, self._config):
                handler = handler_class(event, context, self._config)
                exchange = exchanged(self.app, handler.scope, handler.body)
                headers = [[name, value] for name, value in exchange.headers]
                answer: Answer = handler(
                    {"status": exchange.status, "headers": headers, "body": exchange.body}
                )
                return answer
        raise RuntimeError("not an event from API Gateway, an ALB or Lambda@Edge")
