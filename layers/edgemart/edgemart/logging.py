"""The process-wide Powertools Logger and per-request log keys.

Powertools' `append_keys` / `set_correlation_id` write state shared by the whole process, so
under the gateway's concurrent requests one request's id would leak into another's lines.
Per-request keys therefore go through `thread_safe_append_keys`, which is ContextVar-backed:
each asyncio task (one per request) sees only its own keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger

logger = Logger(service="edgemart", utc=True, use_rfc3339=True)


@contextmanager
def request_log_keys(**keys: object) -> Iterator[None]:
    """Bind `keys` to every log line emitted in this context (this request's task)."""
    previous = logger.thread_safe_get_current_keys()
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()
        if previous:
            logger.thread_safe_append_keys(**previous)
