"""Strict input parsing for query strings, path parameters and JSON bodies (API.md "Errors
and inputs").

A body that is not JSON (empty, invalid UTF-8, `NaN`, nested deeper than 32 levels, a number
out of range) is 400 `invalid_json`; a body not sent as `application/json` is 415; JSON of the
wrong shape, a bad or unknown query parameter is 422 `validation_error` with an `errors` list
naming every bad field at once. Types are strict: `"100"` is not an integer, `1.5` is not a
quantity, `"yes"` is not a boolean. Unknown query parameters and body fields are rejected
too, so a typo is an error instead of a silently ignored filter (and cannot fragment caches).
Text follows one rule (`text_problem`): nothing PostgreSQL cannot store, no control characters
where they make no sense.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from edgemart.errors import ProblemError, problem_for_status

_DIGITS = re.compile(r"-?[0-9]{1,19}")
_HYPHENATED_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

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


def field_error(field: str, location: str, message: str) -> dict[str, str]:
    """One entry of a ValidationError's `errors`: which input (`location`: path, query or
    body) and why."""
    return {"field": field, "location": location, "message": message}


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


class UnsupportedMediaTypeError(ProblemError):
    def __init__(self) -> None:
        super().__init__(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            "Send the request body as application/json (UTF-8)",
        )


MAX_JSON_DEPTH = 32
# Wider than any field's bound, far below the 4,300 digits where int() itself gives up.
_MAX_INTEGER_DIGITS = 20


class _NumberOutOfRangeError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise _NumberOutOfRangeError(text)
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity
        raise _NumberOutOfRangeError(text)
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, integers of at most 20 digits, finite numbers,
    nesting at most MAX_JSON_DEPTH deep. Every refusal is 400 `invalid_json` in our words."""
    if not body.strip():
        raise InvalidJsonError("The request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJsonError("The request body is not valid UTF-8") from None
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float
        )
    except _NumberOutOfRangeError:
        raise InvalidJsonError("A number in the request body is out of range") from None
    except json.JSONDecodeError as exc:
        raise InvalidJsonError(
            f"The request body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):  # NaN/Infinity; nesting past the parser's own limit
        raise InvalidJsonError("The request body is not valid JSON") from None
    if _nested_deeper_than(value, MAX_JSON_DEPTH):
        raise InvalidJsonError(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or `application/<anything>+json`, in UTF-8 if a charset is named."""
    if content_type is None:
        return False
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


async def request_json(request: Request) -> Any:
    """The request body as JSON: 415 for a body not sent as JSON, 400 for one that is not JSON
    (`parse_json`). Its shape is the route's business (edgemart.requestinputs)."""
    body = await request.body()
    if body.strip() and not is_json_media_type(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError()
    return parse_json(body)


async def json_object(request: Request) -> JsonObject:
    """The body as a JSON object, or 400/415/422."""
    value = await request_json(request)
    if not isinstance(value, dict):
        raise ValidationError(
            [{"field": "body", "location": "body", "message": "must be a JSON object"}]
        )
    return JsonObject(value)


def path_text(request: Request, name: str) -> str:
    """A path parameter that passed the text rule (422 otherwise)."""
    value = str(request.path_params[name])
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError([{"field": name, "location": "path", "message": problem}])
    return value


def path_uuid(request: Request, name: str) -> uuid.UUID:
    """A UUID path parameter: 422 if it is no UUID at all, 404 if it is one in another
    spelling (upper case, braces, no hyphens, `urn:uuid:`), so each resource has one URL and
    one cache entry."""
    raw = path_text(request, name)
    try:
        value = uuid.UUID(raw)
    except ValueError:
        raise ValidationError(
            [{"field": name, "location": "path", "message": "must be a UUID"}]
        ) from None
    if str(value) != raw:
        raise problem_for_status(404)
    return value


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
        problem = text_problem(value)
        if problem is not None:
            self.error(name, problem)
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
        multiline: bool = False,
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
        problem = text_problem(value, multiline=multiline)
        if problem is not None:
            self.error(name, problem)
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
        """A UUID in its hyphenated 36-character form (either case)."""
        value = self._get(name, required)
        if name not in self.data:
            return None
        if not isinstance(value, str) or not _HYPHENATED_UUID.fullmatch(value):
            self.error(name, "must be a UUID")
            return None
        return uuid.UUID(value)

    def finish(self) -> None:
        for name in sorted(set(self.data) - self._read):
            self.error(name, "unknown field")
        self.raise_if_invalid()


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
