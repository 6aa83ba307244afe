"""Pieces of edgemart's two routes measured alone, in the edgemart worker: the Lambda-specific
ones (the adapter, the event loop's run, the EMF export, the entry point), each next to what it
replaced, and what the costliest parts of the rest are made of (auth and PyJWT under it,
validation, idempotency, cache, request metrics). py-spy's shares are a map; these are the
figures.

Each piece is called back to back `number` times, `repeat` times; reported: µs per call,
median and fastest of the repeats.
"""

from __future__ import annotations

import base64
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from bench.lambda_overhead.invocations import JWT_SECRET, PURCHASE_BODY, bearer_token, event

Piece = tuple[str, Callable[[], object]]


def pieces() -> list[Piece]:
    """(what, call) of each piece, with the inputs the benchmark's invocations carry."""
    return [*lambda_pieces(), *path_pieces()]


def lambda_pieces() -> list[Piece]:
    import asyncio

    from mangum import Mangum
    from starlette.types import Receive, Scope, Send

    from bench.lambda_overhead.invocations import HOME_CACHE_CONTROL, context, rendered_home
    from edgemart import emf, metrics
    from edgemart.cache import CACHE_RULES, count_lookup
    from edgemart.invocation import lambda_entry_point
    from edgemart.lambdaadapter import ApiGatewayAdapter
    from edgemart.services import Services
    from edgemart.settings import Settings

    home, lambda_context = event("home", bearer_token()), context()
    body, etag = rendered_home()
    headers = [
        (b"content-type", b"application/json"),
        (b"etag", etag.encode()),
        (b"cache-control", HOME_CACHE_CONTROL.encode()),
        (b"vary", b"Accept-Encoding"),
    ]

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def returns_at_once() -> None:
        return None

    def three_documents() -> None:
        metrics.record(metrics.REQUESTS, route_group="home", status_class="2xx")
        metrics.record(metrics.REQUEST_LATENCY, 0.05, route_group="home")
        count_lookup(CACHE_RULES["home"], "hit")
        emf.flush(namespace="edgemart", service="edgemart", disabled=False)

    loop = asyncio.get_event_loop()
    adapter, mangum = ApiGatewayAdapter(answer), Mangum(answer, lifespan="off")
    services = Services.from_settings(Settings())
    entry_point = lambda_entry_point("parts", lambda event, context: None, lambda: services)
    return [
        (
            "`lambdaadapter.ApiGatewayAdapter`: the home event in, the answer out (an app of "
            "two `send`s)",
            lambda: adapter(home, lambda_context),
        ),
        ("↳ `Mangum`, the same app and event", lambda: mangum(home, lambda_context)),  # type: ignore[arg-type]
        (
            "`loop.run_until_complete` of a coroutine that returns at once",
            lambda: loop.run_until_complete(returns_at_once()),
        ),
        ("`emf.flush` of a cached read's three documents, recorded first", three_documents),
        (
            "`invocation.lambda_entry_point` around a handler that does nothing",
            lambda: entry_point(home, lambda_context),
        ),
    ]


def path_pieces() -> list[Piece]:
    import json

    import jwt
    from jwt.algorithms import HMACAlgorithm
    from starlette.requests import Request
    from starlette.responses import Response

    from bench.lambda_overhead.invocations import context, rendered_home
    from edgemart.auth import Authenticator
    from edgemart.cache import CACHE_RULES, Rendered, cached_response
    from edgemart.idempotency import fingerprint
    from edgemart.lambdaadapter import http_api_scope
    from edgemart.requestmetrics import observe_request
    from edgemart.validation import parse_json

    token = bearer_token()
    authenticator = Authenticator(secret=JWT_SECRET)
    options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_sub": False}
    secret = base64.urlsafe_b64encode(JWT_SECRET.encode()).rstrip(b"=").decode()
    prepared = jwt.PyJWK({"kty": "oct", "k": secret, "alg": "HS256"})
    body = json.dumps(PURCHASE_BODY).encode()
    home_body, _ = rendered_home()
    rendered = Rendered.of(json.loads(home_body), now=0.0)
    scope = http_api_scope(event("home", token), context())
    rule = CACHE_RULES["home"]
    headers = {
        "ETag": rendered.etag,
        "Cache-Control": rule.cache_control,
        "Vary": "Accept-Encoding",
    }

    def decode(key: Any) -> object:
        return jwt.decode(token, key, algorithms=["HS256"], options=options)  # type: ignore[arg-type]

    return [
        (
            "`auth.Authenticator.verify_cached`: the purchase's token check",
            lambda: authenticator.verify_cached(token),
        ),
        (
            "↳ PyJWT `get_unverified_header` (`auth._header`: the token's first parse)",
            lambda: jwt.get_unverified_header(token),
        ),
        (
            "↳ PyJWT `decode`, the secret as text (its second parse, the HMAC key prepared)",
            lambda: decode(JWT_SECRET),
        ),
        ("↳ PyJWT `decode`, the key prepared once (`PyJWK`)", lambda: decode(prepared)),
        (
            "↳ PyJWT `HMACAlgorithm.prepare_key` alone (on every `decode` with a text key)",
            lambda: HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(JWT_SECRET),
        ),
        ("`validation.parse_json` of the purchase body", lambda: parse_json(body)),
        ("↳ `json.loads` of the same body", lambda: json.loads(body)),
        ("`idempotency.fingerprint` of the purchase body", lambda: fingerprint(PURCHASE_BODY)),
        (
            "`cache.cached_response`: the home hit's response",
            lambda: cached_response(Request(scope), rendered, rule),
        ),
        (
            "↳ Starlette `Response` with the same body and headers",
            lambda: Response(rendered.body, headers=headers, media_type="application/json"),
        ),
        ("`requestmetrics.observe_request`", lambda: observe_request(scope, 200, 0.05)),
    ]


def measure(number: int, repeat: int) -> list[tuple[str, float, float]]:
    """(what, median µs, fastest µs) of each piece."""
    results = []
    for what, call in pieces():
        call()  # warm: imports, caches
        runs = [
            seconds / number * 1e6 for seconds in timeit.repeat(call, number=number, repeat=repeat)
        ]
        results.append((what, statistics.median(runs), min(runs)))
    return results
