"""The process-wide Powertools Logger and per-request log keys.

Powertools' `append_keys` / `set_correlation_id` write state shared by the whole process, so
under the gateway's concurrent requests one request's id would leak into another's lines.
Per-request keys live in a ContextVar instead (each asyncio task, one per request, sees its
own), and a logging filter copies them onto each record as it is emitted. Binding is then one
ContextVar set per request; the cost of formatting is paid only for lines actually logged.

A Lambda invocation's context (`cold_start`, `function_name`, `function_memory_size`,
`function_arn`, `function_request_id`, the keys Powertools' `inject_lambda_context` adds) is
bound the same way, for the whole process: an execution environment runs one invocation at a
time (edgemart.invocation). The filter makes the keys from the context object only for a line
that is written; Powertools' decorator made and appended them on every invocation, and they
had to be removed at its end: 6 to 10 µs of every invocation (bench/lambda_overhead/RESULTS.md,
the `1e4b02f` row against the one before).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(service="edgemart", utc=True, use_rfc3339=True)

_NO_KEYS: Mapping[str, object] = MappingProxyType({})
_request_keys: ContextVar[Mapping[str, object]] = ContextVar("edgemart_log_keys", default=_NO_KEYS)


_lambda_invocation: tuple[Any, bool] | None = None
"""(Lambda context object, cold start) of the invocation under way, if any."""


def lambda_context_keys(context: Any, cold_start: bool) -> dict[str, object]:
    """The keys of a Lambda invocation's lines, as Powertools' `inject_lambda_context` names
    them."""
    return {
        "cold_start": cold_start,
        "function_name": context.function_name,
        "function_memory_size": context.memory_limit_in_mb,
        "function_arn": context.invoked_function_arn,
        "function_request_id": context.aws_request_id,
    }


def bind_lambda_context(context: Any, cold_start: bool) -> None:
    """Every line written until `unbind_lambda_context` carries this invocation's keys."""
    global _lambda_invocation
    _lambda_invocation = (context, cold_start)


def unbind_lambda_context() -> None:
    global _lambda_invocation
    _lambda_invocation = None


class _RequestKeysFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        _add_missing(record, _request_keys.get())
        if _lambda_invocation is not None:
            _add_missing(record, lambda_context_keys(*_lambda_invocation))
        return True


def _add_missing(record: logging.LogRecord, keys: Mapping[str, object]) -> None:
    """Set `keys` on `record`, each unless the line already names it (an `extra=`)."""
    for name, value in keys.items():
        if not hasattr(record, name):
            setattr(record, name, value)


logging.getLogger(logger.name).addFilter(_RequestKeysFilter())


@contextmanager
def request_log_keys(**keys: object) -> Iterator[None]:
    """Bind `keys` to every log line emitted in this context (this request's task)."""
    token = _request_keys.set({**_request_keys.get(), **keys})
    try:
        yield
    finally:
        _request_keys.reset(token)


# `request_log_keys` without the context manager, for hot paths: `bind_request_log_keys(keys)`
# returns a token to pass to `unbind_request_log_keys`. The ContextVar's own methods, so
# binding costs no Python call of its own.
bind_request_log_keys = _request_keys.set
unbind_request_log_keys = _request_keys.reset


def current_log_keys() -> Mapping[str, object]:
    return _request_keys.get()


class ThrottledWarning:
    """A recurring failure logged at most once per `every_s`, saying how many times it
    happened since the last line: a backend that is down must not write a line per request."""

    def __init__(self, message: str, *, every_s: float = 60.0) -> None:
        self.message = message
        self.every_s = every_s
        self._next_at = 0.0
        self._unlogged = 0

    def note(self, *args: object) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now < self._next_at:
            return
        logger.warning(self.message + " (%d times since the last report)", *args, self._unlogged)
        self._unlogged = 0
        self._next_at = now + self.every_s
