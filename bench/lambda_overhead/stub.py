"""The database of the purchase route in this benchmark: one object answering the purchase
call with the canned row (`invocations.PURCHASE_ROW`), the same for every contender.

It counts the calls and keeps the last statement's arguments, so the run can check that each
contender made the call, with the same arguments in the same order. Two faces, in psycopg's
shapes: `connection()` as an async pool's (edgemart and the bare Starlette app await it) and
`sync_connection()` as a sync connection (a Powertools handler is synchronous, so it would use
psycopg's sync API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from bench.lambda_overhead.invocations import PURCHASE_ROW


class PurchaseDatabase:
    """Answers every statement with the canned purchase row."""

    broken = False
    """psycopg's `Connection.broken`, which edgemart's `Database.connection` reads on errors."""

    def __init__(self, row: Mapping[str, Any] = PURCHASE_ROW) -> None:
        self.row = dict(row)
        self.calls = 0
        self.last_args: Sequence[Any] = ()

    # The async face: a pool's `connection()`, a connection's `execute`, a cursor's `fetchone`.
    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[PurchaseDatabase]:
        yield self

    async def execute(self, statement: bytes, args: Sequence[Any] = ()) -> AsyncCursor:
        self.calls += 1
        self.last_args = args
        return AsyncCursor(self.row)

    def sync_connection(self) -> SyncConnection:
        return SyncConnection(self)


class AsyncCursor:
    __slots__ = ("row",)

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row

    async def fetchone(self) -> Mapping[str, Any]:
        return self.row


class SyncConnection:
    """The same database through psycopg's sync shape."""

    __slots__ = ("database",)

    def __init__(self, database: PurchaseDatabase) -> None:
        self.database = database

    def execute(self, statement: bytes, args: Sequence[Any] = ()) -> SyncCursor:
        self.database.calls += 1
        self.database.last_args = args
        return SyncCursor(self.database.row)


class SyncCursor:
    __slots__ = ("row",)

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row

    def fetchone(self) -> Mapping[str, Any]:
        return self.row
