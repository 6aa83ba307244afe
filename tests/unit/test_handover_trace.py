"""bench/purchase/handover's reading of a scheduler trace, on a hand-written one."""

from __future__ import annotations

import pytest

from bench.purchase.handover import (
    handover_cycles,
    parse,
    preemptions,
    summary_rows,
    wake_placement,
)


def switch(at: str, prev: str, prev_pid: int, state: str, nxt: str, next_pid: int) -> str:
    return (
        f"{prev} {prev_pid} [001] {at}: sched:sched_switch: prev_comm={prev} "
        f"prev_pid={prev_pid} prev_prio=120 prev_state={state} ==> next_comm={nxt} "
        f"next_pid={next_pid} next_prio=120"
    )


def wakeup(
    at: str, waker: str, waker_pid: int, target: str, target_pid: int, waker_cpu: str = "000"
) -> str:
    return (
        f"{waker} {waker_pid} [{waker_cpu}] {at}: sched:sched_wakeup: comm={target} "
        f"pid={target_pid} prio=120 target_cpu=001"
    )


TRACE = [
    switch("1.000000", "postgres", 102, "S", "swapper/1", 0),  # B queues
    switch("1.000000", "postgres", 103, "S", "swapper/1", 0),  # C queues
    switch("1.001000", "python", 200, "S", "swapper/0", 0),  # the client waits
    wakeup("1.001000", "postgres", 101, "postgres", 102),  # A grants B
    switch("1.001050", "swapper/1", 0, "R", "postgres", 102),  # B on a CPU
    wakeup("1.001090", "postgres", 104, "python", 200),  # queued on B's CPU, not D's
    switch("1.001100", "postgres", 102, "R", "python", 200),  # python takes it
    switch("1.001150", "postgres", 104, "S", "swapper/0", 0),  # D sleeps briefly
    switch("1.001300", "python", 200, "S", "postgres", 102),  # B back
    wakeup("1.001350", "postgres", 102, "postgres", 104),  # not a grant: 200 µs asleep
    wakeup("1.001360", "postgres", 102, "python", 200),  # not a backend
    switch("1.001365", "postgres", 102, "S", "swapper/1", 0),  # B waits for an LWLock
    switch("1.001395", "swapper/1", 0, "R", "postgres", 102),  # 30 µs later it has it
    "postgres 102 [001] 1.001400: syscalls:sys_enter_fdatasync: fd: 0x0000003d",
    "postgres 102 [001] 1.001550: syscalls:sys_exit_fdatasync: 0x0",
    wakeup("1.001600", "postgres", 102, "postgres", 103),  # B grants C
    "postgres 103 [000] 1.001700: syscalls:sys_enter_fdatasync: fd: 0x0000003d",  # C unfinished
]


def test_one_cycle_split_into_its_phases() -> None:
    cycles = handover_cycles(parse(TRACE))
    assert len(cycles) == 1
    phases = {name: median for name, median, _ in summary_rows(cycles)}
    assert phases == {
        "granted → on a CPU": pytest.approx(50),
        "on a CPU → WAL flush": pytest.approx(350),
        "… of which runnable, off the CPU": pytest.approx(200),
        "… of which asleep (a lock, I/O)": pytest.approx(30),
        "WAL flush (fdatasync)": pytest.approx(150),
        "flush → next buyer granted": pytest.approx(50),
        "whole cycle": pytest.approx(600),
    }
    assert preemptions(cycles) == {"python (woken by postgres onto another CPU)": 1}
    assert cycles[0].preemptors_slept == [pytest.approx(90)]  # python slept from 1.001000


def test_a_wakeup_onto_the_wakers_own_cpu_is_told_apart() -> None:
    here, there = parse(
        [
            wakeup("1.0", "python", 200, "postgres", 102, waker_cpu="001"),
            wakeup("1.0", "python", 200, "postgres", 102, waker_cpu="000"),
        ]
    )
    assert wake_placement(here) == "(woken by python onto its CPU)"
    assert wake_placement(there) == "(woken by python onto another CPU)"


def test_lines_that_are_not_events_are_skipped() -> None:
    assert parse(["", "# perf header", "garbage line"]) == []
