"""Opaque, tamper-evident pagination cursors.

A cursor is `base64url(json) . base64url(hmac)`: the JSON carries the last row's sort key and
a fingerprint of the query it belongs to, the HMAC-SHA256 (truncated to 128 bits) proves this
service wrote it. A modified, truncated or foreign cursor, or one from another query, is a 422
`validation_error`, never a 500 and never another page of somebody else's query.

The key is `CURSOR_SECRET`, shared by every instance. Without it each process makes a random
one and logs that cursors will not survive a move to another instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from edgemart.logging import logger
from edgemart.validation import ValidationError

_process_secret: bytes | None = None


def cursor_key(configured: str | None) -> bytes:
    global _process_secret
    if configured:
        return configured.encode()
    if _process_secret is None:
        _process_secret = secrets.token_bytes(32)
        logger.warning(
            "CURSOR_SECRET is not set: pagination cursors are signed with a per-process key "
            "and are rejected by any other instance"
        )
    return _process_secret


def query_fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(key: bytes, fingerprint: str, position: list[Any]) -> str:
    payload = json.dumps({"f": fingerprint, "p": position}, separators=(",", ":")).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(key: bytes, fingerprint: str, cursor: str, *, length: int) -> list[Any]:
    """The position (`length` sort-key values) a cursor carries, or ValidationError (field
    `cursor`)."""
    try:
        payload_text, signature_text = cursor.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
        expected = hmac.new(key, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(signature, expected):
            raise ValueError("bad signature")
        document = json.loads(payload)
        if document["f"] != fingerprint or not isinstance(document["p"], list):
            raise ValueError("cursor of another query")
        if len(document["p"]) != length:
            raise ValueError("cursor of another sort order")
        position: list[Any] = document["p"]
        return position
    except (ValueError, KeyError, TypeError):
        raise ValidationError(
            [{"field": "cursor", "location": "query", "message": "is not a valid cursor"}]
        ) from None


def next_page(
    rows: Sequence[Any],
    limit: int,
    key: bytes,
    fingerprint: str,
    position_of: Callable[[Any], list[Any]],
) -> tuple[Sequence[Any], str | None]:
    """A page from the `limit + 1` rows a keyset query fetched: its first `limit` rows, and the
    cursor after the last of them (`position_of` gives its sort key), or None when no row
    follows."""
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    return page, encode_cursor(key, fingerprint, position_of(page[-1]))
