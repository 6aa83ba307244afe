"""Running an invocation's coroutine on its event loop with the first step taken at once, as
Python 3.12's eager tasks do (`asyncio.eager_task_factory`), on Python 3.11.

`loop.run_until_complete` costs an invocation about 8.5 µs on the development machine however
little the coroutine does (this, under 3): it starts and stops the loop and polls the selector
twice. That is a third of what a Powertools resolver's whole invocation costs
(bench/lambda_overhead/RESULTS.md). Most requests of
a warm function never wait for anything: a cached page, the memory rate limiter, a refusal.
`run_eagerly` makes the coroutine a real task and runs that task's first step in place, with
the loop set as the running loop, so `asyncio.current_task()`, `asyncio.timeout`, contextvars
and `get_running_loop()` behave as in any task. When the coroutine has finished and scheduled
nothing, its result is returned without the loop ever running; when it is waiting for
something (I/O, a timer, another task) or left callbacks to run, the loop runs as usual until
the task is done.

This takes the task's first step from the loop's ready queue, which asyncio keeps private
(`BaseEventLoop._ready`). Any loop without that queue, or a call from inside a running loop,
runs the coroutine through `run_until_complete` alone, exactly as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_eagerly(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """`loop.run_until_complete(coroutine)`, without running the loop when the coroutine
    finishes in its first step and leaves nothing scheduled."""
    ready = getattr(loop, "_ready", None)
    if type(ready) is not deque or asyncio._get_running_loop() is not None:
        return loop.run_until_complete(coroutine)
    task: asyncio.Task[T] = loop.create_task(coroutine)
    step = ready[-1] if ready else None
    owner: object = getattr(getattr(step, "_callback", None), "__self__", None)
    if owner is not task:
        return loop.run_until_complete(task)  # not the queue this module knows: as before
    ready.pop()
    asyncio._set_running_loop(loop)
    try:
        step._run()  # type: ignore[union-attr]  # the task's step, in the task's context
    finally:
        asyncio._set_running_loop(None)
    if task.done() and not ready:
        return task.result()
    # Waiting, or it scheduled callbacks (a task it started, a future it resolved): the loop
    # runs them, and runs until the task is done.
    return loop.run_until_complete(task)
