"""Idempotency-Key on the routes that move money (`POST /purchases`, wallet credits).

The fingerprint of a request and how a stored outcome is answered again. The header's rule
(1 to 255 printable ASCII characters, 400 `idempotency_key_required` / `invalid_idempotency_key`
otherwise) is its declaration in the route table (`IDEMPOTENCY_KEY`), checked before the handler
runs (edgemart.requestinputs). The claim itself is SQL, `claim_idempotency_key()`
(edgemart/sql), which `purchase()` and `credit_wallet()` call.

A replay answers the original response's body unchanged (a problem keeps the original
`request_id`), with this request's own `X-Request-ID`, `Idempotent-Replayed: true` and
`Original-Request-ID` naming the request that produced it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from edgemart.errors import ProblemError

REUSED_TITLE = "Idempotency key reused"
REUSED_DETAIL = "This key was used for a different request"


class KeyInUseError(ProblemError):
    """The key's earlier request was still running after the wait (lock_timeout)."""

    def __init__(self) -> None:
        super().__init__(
            409,
            "idempotency_key_in_use",
            "Idempotency key in use",
            "A request with this key is still being processed",
        )


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
