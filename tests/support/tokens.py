"""Bearer tokens the test gateways accept: HS256, signed with the suite's shared secret."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

SECRET = "purchase-tests-secret-of-at-least-32-bytes"
"""The `JWT_SECRET` of the tests' gateways and Lambda settings."""

TOKEN_LIFETIME_S = 6 * 3600
"""Longer than any run of the suite: modules make tokens when they are collected (`ADMIN = ...`),
which may be many minutes before their tests run."""


def auth(sub: str, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    payload = {"sub": sub, "exp": now + TOKEN_LIFETIME_S, **claims}
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def headers(sub: str, key: str | None = None) -> dict[str, str]:
    """`auth(sub)` and an Idempotency-Key (`key`, else a fresh one)."""
    return {**auth(sub), "Idempotency-Key": key or uuid.uuid4().hex}
