"""A small Upstash-REST-compatible endpoint for tests, forwarding to a real Redis.

It speaks the documented REST protocol the `upstash-redis` client uses: `POST /` with a JSON
array command, `POST /pipeline` and `POST /multi-exec` with an array of them, a bearer token,
and `Upstash-Encoding: base64` for string results. So the real client is exercised end to end
against real Redis semantics, with no Upstash account.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def _encode(value: Any, base64_strings: bool) -> Any:
    if isinstance(value, bytes):
        if base64_strings:
            return "OK" if value == b"OK" else base64.b64encode(value).decode()
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if base64_strings and value != "OK":
            return base64.b64encode(value.encode()).decode()
        return value
    if isinstance(value, list | tuple):
        return [_encode(item, base64_strings) for item in value]
    if isinstance(value, bool):
        return int(value)
    return value


def _without_upstash_shebang(command: list[Any]) -> list[Any]:
    """Upstash accepts `#!lua flags=allow-key-locking` on scripts (upstash-ratelimit sends
    it); vanilla Redis 7 rejects the flag and Redis 6 any shebang. Flags are only hints, so
    drop the line."""
    if (
        len(command) > 1
        and str(command[0]).upper() in ("EVAL", "SCRIPT")
        and isinstance(command[1], str)
    ):
        index = 1
        if str(command[0]).upper() == "SCRIPT" and len(command) > 2:
            index = 2
        script = str(command[index])
        if script.lstrip().startswith("#!lua"):
            command = list(command)
            command[index] = script.lstrip().split("\n", 1)[1] if "\n" in script else ""
    return command


def create_upstash_app(redis_url: str, token: str) -> Starlette:
    state: dict[str, Redis] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["redis"] = Redis.from_url(redis_url)
        yield
        await state["redis"].aclose()

    async def run(command: list[Any], base64_strings: bool) -> dict[str, Any]:
        command = _without_upstash_shebang(command)
        try:
            reply = await state["redis"].execute_command(*command)
        except NoScriptError as exc:
            # redis-py strips the error code; Upstash passes Redis' message through whole.
            return {"error": f"NOSCRIPT {exc}"}
        except RedisError as exc:
            return {"error": f"ERR {exc}"}
        return {"result": _encode(reply, base64_strings)}

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {token}"

    async def single(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        base64_strings = request.headers.get("upstash-encoding") == "base64"
        result = await run(await request.json(), base64_strings)
        return JSONResponse(result, status_code=400 if "error" in result else 200)

    async def many(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        base64_strings = request.headers.get("upstash-encoding") == "base64"
        return JSONResponse(
            [await run(command, base64_strings) for command in await request.json()]
        )

    return Starlette(
        routes=[
            Route("/", single, methods=["POST"]),
            Route("/pipeline", many, methods=["POST"]),
            Route("/multi-exec", many, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
