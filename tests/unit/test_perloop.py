"""PerLoop: one value per running event loop, built on first use."""

from __future__ import annotations

import asyncio

from edgemart.perloop import PerLoop


def counting() -> tuple[PerLoop[object], list[object]]:
    built: list[object] = []

    def build() -> object:
        built.append(object())
        return built[-1]

    return PerLoop(build), built


def test_one_value_per_loop() -> None:
    held, built = counting()

    async def twice() -> tuple[object, object]:
        return held.get(), held.get()

    first, again = asyncio.run(twice())
    assert first is again is built[0]
    other, _ = asyncio.run(twice())
    assert other is built[1] and len(built) == 2


def test_take_forgets_the_value() -> None:
    held, built = counting()

    async def use_take_use() -> tuple[object, object | None, object]:
        return held.get(), held.take(), held.get()

    first, taken, after = asyncio.run(use_take_use())
    assert taken is first is built[0] and after is built[1]
    assert held.take() is built[1] and held.take() is None
