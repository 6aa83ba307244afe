"""A client kept per event loop: built on first use in a loop, built again in another.

Connections belong to the event loop that opened them, so a client object cached for the
process must be dropped when a different loop (a test's, the gateway's, a Lambda
invocation's new one) asks for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """Holds what `build` returns for the running event loop."""

    __slots__ = ("_build", "_value", "_loop")

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> T:
        """This loop's value, built now if there is none yet or it belongs to another loop."""
        loop = asyncio.get_running_loop()
        if self._value is None or self._loop is not loop:
            self._value = self._build()
            self._loop = loop
        return self._value

    def take(self) -> T | None:
        """The value held, if any, forgotten (for the caller to close); the next `get`
        builds a new one."""
        value, self._value, self._loop = self._value, None, None
        return value
