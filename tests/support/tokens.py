"""Bearer tokens the test gateways accept: HS256, signed with the suite's shared secret."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from edgemart.auth import EXPIRED, INVALID_TIME, NO_SUBJECT, SUBJECT_NOT_CLEAN, SUBJECT_TOO_LONG

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


REFUSED_CLAIMS = [
    pytest.param({"sub": "a" * 10_000}, SUBJECT_TOO_LONG, id="sub-10000"),
    pytest.param({"sub": "a" * 256}, SUBJECT_TOO_LONG, id="sub-256"),
    pytest.param({"sub": "ali\x00ce"}, SUBJECT_NOT_CLEAN, id="sub-nul"),
    pytest.param({"sub": "\ud800"}, SUBJECT_NOT_CLEAN, id="sub-surrogate"),
    pytest.param({"sub": "\udc00dana"}, SUBJECT_NOT_CLEAN, id="sub-low-surrogate"),
    pytest.param({"sub": "carol\x1fmallory"}, SUBJECT_NOT_CLEAN, id="sub-unit-separator"),
    pytest.param({"sub": "carol\x9f"}, SUBJECT_NOT_CLEAN, id="sub-c1"),
    pytest.param({"sub": ""}, NO_SUBJECT, id="sub-empty"),
    pytest.param({"sub": None}, NO_SUBJECT, id="sub-null"),
    pytest.param({"exp": "9999999999"}, INVALID_TIME.format(claim="exp"), id="exp-string"),
    pytest.param({"exp": True}, INVALID_TIME.format(claim="exp"), id="exp-bool"),
    pytest.param({"exp": 2**63}, INVALID_TIME.format(claim="exp"), id="exp-2**63"),
    pytest.param({"nbf": "0"}, INVALID_TIME.format(claim="nbf"), id="nbf-string"),
    pytest.param({"exp": int(time.time()) - 20}, EXPIRED, id="expired-20s"),
]
"""Claims refused with the same 401 detail wherever a token is checked: on the gateway's
routes (tests/integration/test_auth.py) and through a Lambda handler
(tests/contract/test_auth_handlers.py)."""
