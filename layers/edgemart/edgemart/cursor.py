"""Opaque, tamper-evident pagination cursors.

A cursor is `base64url(json) . base64url(hmac)`: the JSON carries the last row's sort key and
a fingerprint of the query it belongs to, the HMAC-SHA256 (truncated to 128 bits) proves this
service wrote it. A modified, truncated or foreign cursor, or one from another query, is a 422
`validation_error`, never a 500 and never another page of somebody else's query.

The key is `CURSOR_SECRET`, shared by every instance. Without it each process makes a random
one and logs that cursors will not survive a move to another instance.

Each tenant signs with a key of its own, derived from that one (`cursor_key`): a cursor one
marketplace handed out fails the signature check in another, so it is 422 there like any
forged cursor. The default tenant's key is the secret itself, so its cursors are the ones
issued before tenancy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from edgemart.logging import logger
from edgemart.tenancy import DEFAULT_TENANT_ID, Tenant, tenant_id_of
from edgemart.validation import ValidationError

_process_secret: bytes | None = None


_tenant_keys: dict[tuple[bytes, UUID], bytes] = {}


def cursor_key(configured: str | None, tenant: Tenant | UUID = DEFAULT_TENANT_ID) -> bytes:
    """The key `tenant`'s cursors are signed with: the secret for the default tenant,
    HMAC(secret, tenant id) for any other (derived once per process and tenant)."""
    global _process_secret
    if configured:
        secret = configured.encode()
    else:
        if _process_secret is None:
            _process_secret = secrets.token_bytes(32)
            logger.warning(
                "CURSOR_SECRET is not set: pagination cursors are signed with a per-process key "
                "and are rejected by any other instance"
            )
        secret = _process_secret
    tenant_id = tenant_id_of(tenant)
    if tenant_id == DEFAULT_TENANT_ID:
        return secret
    derived = _tenant_keys.get((secret, tenant_id))
    if derived is None:
        derived = hmac.new(secret, b"tenant:" + tenant_id.bytes, hashlib.sha256).digest()
        if len(_tenant_keys) >= 4096:
            _tenant_keys.clear()  # bounded: tenants are few, secrets fewer
        _tenant_keys[secret, tenant_id] = derived
    return derived


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
