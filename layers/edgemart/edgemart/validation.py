"""Strict input parsing for query strings, path parameters and JSON bodies (API.md "Errors
and inputs").

A body that is not JSON (empty, invalid UTF-8, `NaN`) is 400 `invalid_json`; JSON of the
wrong shape, a bad or unknown query parameter is 422 `validation_error` with an `errors` list
naming every bad field at once. Types are strict: `"100"` is not an integer, `1.5` is not a
quantity, `"yes"` is not a boolean. Unknown query parameters and body fields are rejected
too, so a typo is an error instead of a silently ignored filter (and cannot fragment caches).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from edgemart.errors import ProblemError

_DIGITS = re.compile(r"-?[0-9]{1,19}")

# One rule for all text that reaches PostgreSQL or a key (API.md "Errors and inputs"): text
# PostgreSQL cannot store (NUL; an unpaired surrogate, which has no UTF-8 form) is refused
# everywhere; control characters (C0, DEL, C1) are refused in single-line text, and always in
# identifiers (ids, slugs, a token's `sub`), where they only ever serve to forge a key.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL_OR_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Multi-line text (descriptions) keeps tab, line feed and carriage return.
_MULTILINE_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why `value` is not acceptable text, or None. Single-line unless `multiline`."""
    if _UNSTORABLE.search(value):
        return "must be valid Unicode text without NUL characters"
    forbidden = _MULTILINE_FORBIDDEN if multiline else _CONTROL_OR_UNSTORABLE
    if forbidden.search(value):
        return "must not contain control characters"
    return None


def is_clean_identifier(value: str) -> bool:
    """No NUL, surrogate or control character: safe as (part of) a key or an id."""
    return _CONTROL_OR_UNSTORABLE.search(value) is None


class ValidationError(ProblemError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(
            422,
            "validation_error",
            "Validation error",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            extra={"errors": errors},
        )
        self.errors = errors


class InvalidJsonError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(400, "invalid_json", "Invalid JSON", detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidJsonError("The request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJsonError("The request body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidJsonError(f"The request body is not valid JSON: {exc}") from None


async def json_object(request: Request) -> JsonObject:
    """The body as a JSON object, or 400/422."""
    value = parse_json(await request.body())
    if not isinstance(value, dict):
        raise ValidationError(
            [{"field": "body", "location": "body", "message": "must be a JSON object"}]
        )
    return JsonObject(value)


def path_uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(request.path_params[name]))
    except ValueError:
        raise ValidationError(
            [{"field": name, "location": "path", "message": "must be a UUID"}]
        ) from None


class _Collector:
    location = ""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def error(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "location": self.location, "message": message})

    def raise_if_invalid(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


class QueryParams(_Collector):
    """Reads a query string strictly: each parameter once, only the allowed names."""

    location = "query"

    def __init__(self, request: Request, allowed: Iterable[str]) -> None:
        super().__init__()
        allowed_names = set(allowed)
        self.values: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in allowed_names:
                self.error(name, "unknown parameter")
            elif name in self.values:
                self.error(name, "given more than once")
            else:
                self.values[name] = value

    def text(
        self, name: str, *, required: bool = False, min_length: int = 1, max_length: int = 200
    ) -> str | None:
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(name, "is required")
            return None
        if not min_length <= len(value) <= max_length:
            self.error(name, f"must be {min_length} to {max_length} characters")
            return None
        return value

    def integer(
        self,
        name: str,
        *,
        default: int | None = None,
        low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        raw = self.values.get(name)
        if raw is None:
            return default
        if not _DIGITS.fullmatch(raw):
            self.error(name, "must be an integer")
            return default
        return _bounded(self, name, int(raw), low, high, default)

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = self.values.get(name, default)
        if value not in options:
            self.error(name, f"must be one of {', '.join(options)}")
            return default
        return value


class JsonObject(_Collector):
    """Reads fields of a JSON object strictly; `finish()` rejects fields nobody read."""

    location = "body"

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data
        self._read: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, required: bool) -> Any:
        self._read.add(name)
        if name not in self.data:
            if required:
                self.error(name, "is required")
            return None
        return self.data[name]

    def text(
        self,
        name: str,
        *,
        required: bool = False,
        min_length: int = 0,
        max_length: int,
        pattern: re.Pattern[str] | None = None,
    ) -> str | None:
        value = self._get(name, required)
        if name not in self.data:
            return None
        if not isinstance(value, str):
            self.error(name, "must be a string")
            return None
        if not min_length <= len(value) <= max_length:
            self.error(name, f"must be {min_length} to {max_length} characters")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.error(name, f"must match {pattern.pattern}")
            return None
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        value = self._get(name, required)
        if name not in self.data:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(name, "must be an integer")
            return None
        return _bounded(self, name, value, low, high, None)

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        value = self._get(name, required)
        if name not in self.data:
            return None
        if not isinstance(value, bool):
            self.error(name, "must be true or false")
            return None
        return value

    def uuid(self, name: str, *, required: bool = False) -> uuid.UUID | None:
        value = self._get(name, required)
        if name not in self.data:
            return None
        try:
            return uuid.UUID(value) if isinstance(value, str) else _not_uuid()
        except ValueError:
            self.error(name, "must be a UUID")
            return None

    def finish(self) -> None:
        for name in sorted(set(self.data) - self._read):
            self.error(name, "unknown field")
        self.raise_if_invalid()


def _not_uuid() -> uuid.UUID:
    raise ValueError("not a string")


def _bounded(
    collector: _Collector,
    name: str,
    value: int,
    low: int | None,
    high: int | None,
    default: int | None,
) -> int | None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f">= {low}" if low is not None else f"<= {high}")
        )
        collector.error(name, f"must be {bounds}")
        return default
    return value
