"""The input rules every request is held to: strict JSON bodies, one rule for text, and the
problems that refuse an input.

A body that is not JSON (empty, invalid UTF-8, `NaN`, nested deeper than 32 levels, a number
out of range) is 400 `invalid_json`; a body not sent as `application/json` is 415; JSON of the
wrong shape, a bad or unknown query parameter is 422 `validation_error` with an `errors` list
naming every bad field at once (`ValidationError`). Text follows one rule (`text_problem`):
nothing PostgreSQL cannot store, no control characters where they make no sense.

Which fields a route takes, and their types and bounds, are the route table's
(edgemart.routetable); edgemart.requestinputs holds each request to them with these rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edgemart.errors import ProblemError

if TYPE_CHECKING:
    from starlette.requests import Request

# One rule for all text that reaches PostgreSQL or a key: text
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
