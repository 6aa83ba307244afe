"""Running an invocation's coroutine with its first step taken at once: the same results, errors,
task and context as `run_until_complete`, without running the loop when nothing waits."""

import asyncio
import contextvars
from collections.abc import Iterator

import pytest

from edgemart.eagertask import run_eagerly

probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_a_coroutine_that_waits_for_nothing_runs_as_a_task_without_the_loop(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ran: list[str] = []
    loop.call_at(0, ran.append, "due timer")  # run by any run of the loop

    async def at_once() -> tuple[bool, bool]:
        task = asyncio.current_task()
        async with asyncio.timeout(5):  # needs the current task
            pass
        return task is not None, asyncio.get_running_loop() is loop

    assert run_eagerly(loop, at_once()) == (True, True)
    assert ran == []
    assert asyncio._get_running_loop() is None
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["due timer"]


def test_a_coroutine_that_waits_is_run_by_the_loop_to_the_end(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def waits() -> str:
        token = probe.set("inside")  # set in the first step, reset after the wait
        future = loop.create_future()
        loop.call_later(0.01, future.set_result, "woken")
        result = await future
        probe.reset(token)
        return result

    assert run_eagerly(loop, waits()) == "woken"


def test_the_coroutine_runs_in_a_copy_of_the_callers_context(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def reads_and_sets() -> str:
        seen = probe.get()
        probe.set("changed inside")
        return seen

    token = probe.set("outside")
    try:
        assert run_eagerly(loop, reads_and_sets()) == "outside"
        assert probe.get() == "outside"
    finally:
        probe.reset(token)


def test_errors_are_raised_as_run_until_complete_raises_them(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def fails_at_once() -> None:
        raise LookupError("at once")

    async def fails_after_a_wait() -> None:
        await asyncio.sleep(0)
        raise KeyError("after a wait")

    with pytest.raises(LookupError, match="at once"):
        run_eagerly(loop, fails_at_once())
    with pytest.raises(KeyError, match="after a wait"):
        run_eagerly(loop, fails_after_a_wait())


def test_what_the_coroutine_scheduled_runs_before_it_returns(
    loop: asyncio.AbstractEventLoop,
) -> None:
    started: list[str] = []

    async def background() -> None:
        started.append("background")

    async def starts_a_task() -> str:
        loop.create_task(background())  # not awaited: the loop still gives it its first step
        return "done"

    assert run_eagerly(loop, starts_a_task()) == "done"
    assert started == ["background"]


def test_inside_a_running_loop_it_refuses_as_run_until_complete_does(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def nothing() -> None:
        return None

    async def caller() -> None:
        coroutine = nothing()
        try:
            with pytest.raises(RuntimeError, match="another loop is running"):
                run_eagerly(loop, coroutine)
        finally:
            coroutine.close()

    asyncio.run(caller())
