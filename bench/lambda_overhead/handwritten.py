"""The purchase work the bare and Powertools contenders do by hand, so that they do what
edgemart's route does for a purchase, framework apart:

1. the token: `Authorization: Bearer`, verified by PyJWT (HS256, the shared secret, `exp`
   required and checked), its `sub` a non-empty string;
2. `Idempotency-Key`: present, 1 to 255 printable ASCII characters;
3. the body: sent as `application/json`, parsed by `json.loads`, an object with `product_id`
   (a hyphenated UUID), `quantity` (an integer, not a boolean, 1 to 10), optional
   `expected_unit_price_cents` (an integer 1 to 10^9) and nothing else;
4. the idempotency fingerprint of the body (sha256 of its canonical JSON, as
   edgemart.idempotency computes it);
5. the one database call with edgemart's 13 arguments, in its order (edgemart's defaults for
   the tenant, fee, key lifetime and wait, currency);
6. the response: 201, the order as JSON, `Cache-Control: no-store`, `Location`.

A refusal is a `Refusal` (status and code); each contender renders it its own way. The
benchmark only sends valid purchases.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

import jwt

from bench.lambda_overhead.invocations import JWT_SECRET

PURCHASE_SQL: Final = b"SELECT status, body, replayed, original_request_id FROM purchase(...)"
DEFAULT_TENANT_ID: Final = uuid.UUID("00000000-0000-0000-0000-000000000001")
PLATFORM_FEE_BASIS_POINTS: Final = 1000
IDEMPOTENCY_KEY_TTL_S: Final = 86_400
IDEMPOTENCY_KEY_WAIT_S: Final = 5.0
CURRENCY: Final = "USD"
MAX_PRICE: Final = 1_000_000_000

_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_FIELDS: Final = frozenset({"product_id", "quantity", "expected_unit_price_cents"})


class Refusal(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def buyer(authorization: str | None) -> str:
    """The verified subject of the bearer token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Refusal(401, "unauthorized")
    try:
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError:
        raise Refusal(401, "unauthorized") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Refusal(401, "unauthorized")
    return sub


def idempotency_key(value: str | None) -> str:
    if not value:
        raise Refusal(400, "idempotency_key_required")
    if not _KEY.fullmatch(value):
        raise Refusal(400, "invalid_idempotency_key")
    return value


def _integer(value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise Refusal(422, "validation_error")
    return value


def purchase_body(content_type: str | None, raw: bytes | str) -> dict[str, Any]:
    """The sent body, held to the route's schema."""
    if (content_type or "").split(";", 1)[0].strip().lower() != "application/json":
        raise Refusal(415, "unsupported_media_type")
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refusal(400, "invalid_json") from None
    if not isinstance(body, dict) or body.keys() - _FIELDS:
        raise Refusal(422, "validation_error")
    product_id = body.get("product_id")
    if not isinstance(product_id, str) or not _UUID.fullmatch(product_id):
        raise Refusal(422, "validation_error")
    _integer(body.get("quantity"), 1, 10)
    if body.get("expected_unit_price_cents") is not None:
        _integer(body["expected_unit_price_cents"], 1, MAX_PRICE)
    return body


def fingerprint(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def purchase_args(sub: str, key: str, body: Mapping[str, Any], request_id: str) -> list[Any]:
    """The database call's arguments, in edgemart's order."""
    return [
        DEFAULT_TENANT_ID,
        sub,
        key,
        fingerprint(body),
        uuid.UUID(body["product_id"]),
        body["quantity"],
        body.get("expected_unit_price_cents"),
        PLATFORM_FEE_BASIS_POINTS,
        request_id,
        IDEMPOTENCY_KEY_TTL_S,
        IDEMPOTENCY_KEY_WAIT_S,
        False,
        CURRENCY,
    ]


def created_headers(order: Mapping[str, Any]) -> dict[str, str]:
    return {"Cache-Control": "no-store", "Location": f"/purchases/{order['id']}"}


def order_json(order: Mapping[str, Any]) -> str:
    """The response body, in the bytes Starlette's JSONResponse (edgemart's) writes."""
    return json.dumps(order, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
