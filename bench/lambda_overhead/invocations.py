"""What every contender is invoked with and must answer, the same for all three.

The events are the API Gateway HTTP API (v2) fixtures the contract tests use
(tests/events/README.md), changed only where the route needs it; the context is the tests'
`FakeLambdaContext`. Every contender's process imports this module alike.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any, Final

from bench.ratelimit.gateway import home_document
from tests.contract.lambda_harness import FakeLambdaContext, load_event, with_request

ROUTES: Final = ("home", "purchase")
ROUTE_LABELS: Final = {
    "home": "`GET /marketplace/home`, cached",
    "purchase": "`POST /purchases`, stub database",
}

JWT_SECRET: Final = "lambda-overhead-bench-secret-at-least-32-bytes"
BUYER: Final = "bench-buyer"
IDEMPOTENCY_KEY: Final = "bench-order-2f1c9a"
PRODUCT_ID: Final = "7a1f3c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b"
QUANTITY: Final = 2

HOME_CACHE_CONTROL: Final = (
    "public, max-age=0, s-maxage=60, stale-while-revalidate=300, stale-if-error=86400"
)
"""edgemart's `home` cache rule (edgemart.cache.CACHE_RULES), which the other two send too."""
HOME_TTL_S: Final = 86_400.0
"""Every contender keeps the home document this long: warm for the whole run (edgemart's
own 60 s would expire mid-run and turn hits into misses)."""

ORDER_ID: Final = "0b9e1d7c-3f2a-4c5b-9d8e-7f6a5b4c3d2e"
ORDER: Final[Mapping[str, Any]] = {
    "id": ORDER_ID,
    "status": "completed",
    "product_id": PRODUCT_ID,
    "quantity": QUANTITY,
    "unit_price_cents": 4_990,
    "total_cents": 9_980,
    "created_at": "2026-12-04T12:00:00.000000Z",
    "failure_code": None,
}
"""The order `purchase()` answers (the shape of edgemart/sql/order_json.sql)."""
PURCHASE_ROW: Final[Mapping[str, Any]] = {
    "status": 201,
    "body": ORDER,
    "replayed": False,
    "original_request_id": None,
}
"""The one row the stub database answers every purchase with: a new order, not a replay."""

PURCHASE_BODY: Final[Mapping[str, Any]] = {"product_id": PRODUCT_ID, "quantity": QUANTITY}


def rendered_home() -> tuple[bytes, str]:
    """The home document's JSON bytes and strong ETag, as edgemart renders them
    (`edgemart.cache.Rendered.of`: compact, UTF-8, sha256 ETag)."""
    body = json.dumps(home_document(), separators=(",", ":"), ensure_ascii=False).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def bearer_token() -> str:
    """An HS256 token for the buyer, valid for the run."""
    import jwt

    claims = {"sub": BUYER, "exp": int(time.time()) + 6 * 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def event(route: str, token: str) -> dict[str, Any]:
    """The v2 event of `route`. Home: the fixture without its sample query string (the route
    takes none). Purchase: the fixture with the buyer's token, the Idempotency-Key and a JSON
    body, as the contract tests send it."""
    if route == "home":
        home = load_event("apigw_v2_get_home.json")
        home["rawQueryString"] = ""
        del home["queryStringParameters"]
        return home
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": IDEMPOTENCY_KEY,
        "Content-Type": "application/json",
    }
    purchase = with_request(load_event("apigw_v2_post_purchases.json"), headers, PURCHASE_BODY)
    purchase["rawQueryString"] = ""
    del purchase["queryStringParameters"]
    return purchase


def context() -> FakeLambdaContext:
    return FakeLambdaContext()


HomeCache = dict[str, tuple[float, Any, str]]
"""The hand-written contenders' cache of the home page: (expires at, body, ETag)."""


def cached_home(cache: HomeCache) -> tuple[Any, dict[str, str]]:
    """The hand-written contenders' cached home: its body and the headers edgemart sends."""
    expires_at, body, etag = cache["home"]
    if expires_at <= time.time():
        raise LookupError("the home document expired mid-run")
    headers = {"ETag": etag, "Cache-Control": HOME_CACHE_CONTROL, "Vary": "Accept-Encoding"}
    return body, headers
