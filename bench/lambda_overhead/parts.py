"""Pieces of edgemart's two routes measured alone, in the edgemart worker: what the costliest
parts of the profile are made of, for the modules this benchmark does not change (auth,
validation, idempotency, cache, request metrics) and for PyJWT under them.

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
