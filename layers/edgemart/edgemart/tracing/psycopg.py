"""A span per database statement: a psycopg cursor class, given to the pools' connections as
their `cursor_factory` when tracing is on (`Database.connection_kwargs`).

`conn.execute()` runs every statement through a cursor of this class, so a statement costs
one span and nothing else changes: with tracing off the pools keep psycopg's own cursor.
psycopg has no statement hooks of its own; a cursor factory is the way its connections are
meant to be extended (OpenTelemetry's psycopg instrumentation uses it too). Statements run
outside a live trace (a job the gateway runs, a pool's background work) make no span.

The statement text is recorded, never its parameters: the statements are written with
placeholders, so their text holds no user data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from opentelemetry.trace import SpanKind, Tracer
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.abc import Params, Query

from edgemart.tracing.context import in_a_live_trace

MAX_STATEMENT_CHARS = 2000


def statement_text(query: Query, conn: AsyncConnection[Any]) -> str:
    if isinstance(query, str):
        text = query
    elif isinstance(query, bytes):
        text = query.decode(errors="replace")
    elif isinstance(query, sql.Composable):
        text = query.as_string(conn)
    else:
        text = ""
    return text.strip()[:MAX_STATEMENT_CHARS]


def statement_attributes(text: str, conn: AsyncConnection[Any]) -> dict[str, Any]:
    info = conn.info
    return {
        "db.system.name": "postgresql",
        "db.namespace": info.dbname,
        "db.operation.name": operation_name(text),
        "db.query.text": text,
        "server.address": info.host,
        "server.port": info.port,
    }


def operation_name(text: str) -> str:
    """The statement's first word (`SELECT`, `INSERT`, `WITH`, ...): the span's name."""
    words = text.split(None, 1)
    return words[0].upper() if words else "postgresql"


def traced_cursor_class(tracer: Tracer) -> type[AsyncCursor[Any]]:
    class TracedCursor(AsyncCursor[Any]):
        async def execute(
            self,
            query: Any,  # psycopg's overloads, by the kind of query, in one signature
            params: Params | None = None,
            *,
            prepare: bool | None = None,
            binary: bool | None = None,
        ) -> Self:
            if not in_a_live_trace():
                return await super().execute(query, params, prepare=prepare, binary=binary)
            text = statement_text(query, self.connection)
            with tracer.start_as_current_span(
                operation_name(text),
                kind=SpanKind.CLIENT,
                attributes=statement_attributes(text, self.connection),
            ):
                return await super().execute(query, params, prepare=prepare, binary=binary)

        async def executemany(
            self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
        ) -> None:
            if not in_a_live_trace():
                await super().executemany(query, params_seq, returning=returning)
                return
            text = statement_text(query, self.connection)
            with tracer.start_as_current_span(
                operation_name(text),
                kind=SpanKind.CLIENT,
                attributes=statement_attributes(text, self.connection),
            ):
                await super().executemany(query, params_seq, returning=returning)

    return TracedCursor
