"""in_background: work that runs beside a block and ends with it."""

from __future__ import annotations

import asyncio

import pytest

from edgemart.background import in_background


class Sleeper:
    """Work that sleeps until cancelled, noting when it started and when it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def work(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_the_work_runs_during_the_block_and_is_cancelled_after_it() -> None:
    async def scenario() -> tuple[bool, bool]:
        sleeper = Sleeper()
        async with in_background(sleeper.work()):
            await asyncio.wait_for(sleeper.started.wait(), 1)
            cancelled_inside = sleeper.cancelled.is_set()
        return cancelled_inside, sleeper.cancelled.is_set()

    assert asyncio.run(scenario()) == (False, True)


def test_an_error_in_the_block_still_cancels_the_work_and_propagates() -> None:
    sleeper_of_run: list[Sleeper] = []

    async def scenario() -> None:
        sleeper = Sleeper()
        sleeper_of_run.append(sleeper)
        async with in_background(sleeper.work()):
            await asyncio.wait_for(sleeper.started.wait(), 1)
            raise LookupError("the block failed")

    with pytest.raises(LookupError):
        asyncio.run(scenario())
    assert sleeper_of_run[0].cancelled.is_set()
