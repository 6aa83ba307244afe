"""Request ids: accept a well-formed incoming `X-Request-ID`, otherwise generate one.

The request-context middleware echoes the id on every response (errors included) and binds
it as the log correlation id; `current_request_id()` reads it back anywhere in the request,
so problem bodies carry it without threading it through calls.
"""

from __future__ import annotations

import random
import re

from starlette.types import Scope

from edgemart.logging import current_log_keys

MAX_REQUEST_ID_LENGTH = 128
_VALID_REQUEST_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def current_request_id() -> str | None:
    """This request's id: one ContextVar, shared with the log keys, holds both."""
    request_id = current_log_keys().get("request_id")
    return request_id if isinstance(request_id, str) else None


def is_valid_request_id(value: str) -> bool:
    return _VALID_REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """128 random bits as 32 hex characters.

    An id only has to be unique, not unguessable, so it comes from `random` (reseeded from
    the OS after every fork) rather than a system call per request."""
    return random.getrandbits(128).to_bytes(16, "big").hex()


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if is_valid_request_id(text) else None
    return None
