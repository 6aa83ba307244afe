"""Idempotency-Key on the routes that move money (`POST /purchases`, wallet credits).

The header rule, the fingerprint of a request, and how a stored outcome is answered again.
The claim itself is SQL, `claim_idempotency_key()` (edgemart/sql), which `purchase()` and
`credit_wallet()` call.

A replay answers the original response's body unchanged (a problem keeps the original
`request_id`), with this request's own `X-Request-ID`, `Idempotent-Replayed: true` and
`Original-Request-ID` naming the request that produced it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from edgemart.errors import ProblemError

_PRINTABLE_ASCII = frozenset(range(0x20, 0x7F))
MAX_KEY_LENGTH = 255
REUSED_TITLE = "Idempotency key reused"
REUSED_DETAIL = "This key was used for a different request"


class IdempotencyKeyError(ProblemError):
    def __init__(self, code: str, detail: str) -> None:
        title = (
            "Idempotency-Key required"
            if code == "idempotency_key_required"
            else "Invalid Idempotency-Key"
        )
        super().__init__(400, code, title, detail)


class KeyInUseError(ProblemError):
    """The key's earlier request was still running after the wait (lock_timeout)."""

    def __init__(self) -> None:
        super().__init__(
            409,
            "idempotency_key_in_use",
            "Idempotency key in use",
            "A request with this key is still being processed",
        )


def idempotency_key(request: Request) -> str:
    raw = request.headers.get("idempotency-key")
    if not raw:
        raise IdempotencyKeyError("idempotency_key_required", "Send an Idempotency-Key header")
    encoded = raw.encode("latin-1")
    if len(encoded) > MAX_KEY_LENGTH or not set(encoded) <= _PRINTABLE_ASCII:
        raise IdempotencyKeyError("invalid_idempotency_key", "1 to 255 printable ASCII characters")
    return raw


def fingerprint(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay_headers(replayed: bool, original_request_id: str | None) -> dict[str, str]:
    """The headers that mark a replayed response (none for a first answer)."""
    if not replayed:
        return {}
    headers = {"Idempotent-Replayed": "true"}
    if original_request_id:
        headers["Original-Request-ID"] = original_request_id
    return headers
