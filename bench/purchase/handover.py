"""Where a hot product's hand-over cycle goes: kernel scheduler traces of `purchase()` at 8
clients, driven by the Python client and by pgbench.

    python -m bench.purchase.handover [--seconds S] [--out bench/purchase/HANDOVER.md]

Needs root and `perf` (Debian: linux-perf); uses DATABASE_URL as bench.purchase.run does.

Buyers of the hot product hand its queue lock (purchase_queue_key) on at each COMMIT. One cycle
runs from the wake-up of a buyer whose lock was granted to its own wake-up of the next:
waiting for a CPU, its work up to the WAL flush (the stock UPDATE, the end of the function,
the deferred foreign-key checks, the commit record), the flush's fdatasync, and releasing
its locks. The trace marks a grant as a wake-up, by a backend, of a backend that had slept
for over 300 µs (buyers queue for milliseconds); `perf record` on the sched_switch and
sched_wakeup tracepoints and on fdatasync gives the rest. While a holder is between its start
and its flush, time it spends runnable but off the CPU, and who took the CPU from it, show
what the other processes on the machine cost the lock's hand-over; for each such
preemption, the process that woke the one taking the CPU, and whether the scheduler queued it
on its waker's CPU or on another (the holder's). pgbench runs twice: back to back, and with a
pause before each purchase about as long as the Python client takes to answer, to tell the
client's slower answer from the way it wakes the backends.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.database import admin_url
from bench.purchase.run import drive, ours, ours_via_pgbench, prepare
from bench.report import database_command, provenance, publish

CLIENTS = 8
# About as long as the Python client leaves a backend waiting for its next request (the
# sleep this tool reports for the backends that take the holder's CPU).
THINK_US = 100
GRANT_SLEEP_US = 300.0  # buyers queue for milliseconds; LWLock waits are mostly shorter
TRACEPOINTS = (
    "sched:sched_wakeup",
    "sched:sched_switch",
    "syscalls:sys_enter_fdatasync",
    "syscalls:sys_exit_fdatasync",
)

_LINE = re.compile(r"^\s*(\S+)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
_SWITCH = re.compile(
    r"prev_comm=\S+ prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> "
    r"next_comm=(\S+) next_pid=(\d+)"
)
_WAKEUP_TARGET = re.compile(r" pid=(\d+)")
_WAKEUP_CPU = re.compile(r" target_cpu=(\d+)")


@dataclass
class Event:
    at_us: float
    comm: str
    pid: int
    cpu: int
    name: str
    detail: str


@dataclass
class Cycle:
    """One holder of the queue lock, from its grant to its grant of the next buyer."""

    granted: float
    running: float | None = None
    flush_start: float | None = None
    flush_end: float | None = None
    next_granted: float | None = None
    runnable_off_cpu: float = 0.0
    asleep: float = 0.0
    preempted_by: Counter[str] = field(default_factory=Counter)
    preemptors_slept: list[float] = field(default_factory=list)  # µs, before their wake-up
    off_cpu_since: float | None = None
    off_cpu_runnable: bool = False

    def complete(self) -> bool:
        return None not in (self.running, self.flush_start, self.flush_end, self.next_granted)


def parse(lines: Iterable[str]) -> list[Event]:
    """Events from `perf script -F comm,pid,cpu,time,event,trace` output."""
    events = []
    for line in lines:
        match = _LINE.match(line)
        if match:
            comm, pid, cpu, seconds, name, detail = match.groups()
            events.append(Event(float(seconds) * 1e6, comm, int(pid), int(cpu), name, detail))
    return events


def handover_cycles(events: list[Event], backend: str = "postgres") -> list[Cycle]:
    """The complete hand-over cycles in a trace (see the module docstring)."""
    backends = {event.pid for event in events if event.comm == backend}
    slept_since: dict[int, float] = {}
    woken_by: dict[int, tuple[str, float | None]] = {}  # pid → wake_placement, µs asleep
    holders: dict[int, Cycle] = {}
    cycles: list[Cycle] = []
    for event in events:
        if event.name == "sched:sched_switch":
            switch = _SWITCH.search(event.detail)
            if switch is None:
                continue
            previous, state, next_comm, following = (
                int(switch[1]),
                switch[2],
                switch[3],
                int(switch[4]),
            )
            if state.startswith("S"):
                slept_since[previous] = event.at_us
            leaving = holders.get(previous)
            if leaving and leaving.running is not None and leaving.flush_start is None:
                leaving.off_cpu_since = event.at_us
                leaving.off_cpu_runnable = state.startswith("R")
                if leaving.off_cpu_runnable:
                    placement, slept_us = woken_by.get(following, ("", None))
                    leaving.preempted_by[f"{next_comm} {placement}".strip()] += 1
                    if slept_us is not None:
                        leaving.preemptors_slept.append(slept_us)
            entering = holders.get(following)
            if entering and entering.running is None:
                entering.running = event.at_us
            elif entering and entering.off_cpu_since is not None:
                away = event.at_us - entering.off_cpu_since
                if entering.off_cpu_runnable:
                    entering.runnable_off_cpu += away
                else:
                    entering.asleep += away
                entering.off_cpu_since = None
        elif event.name == "sched:sched_wakeup":
            target_match = _WAKEUP_TARGET.search(event.detail)
            if target_match is None:
                continue
            target = int(target_match[1])
            asleep_since = slept_since.get(target)
            woken_by[target] = (
                wake_placement(event),
                None if asleep_since is None else event.at_us - asleep_since,
            )
            if event.comm != backend:
                continue
            if target == event.pid or target not in backends or asleep_since is None:
                continue
            if event.at_us - asleep_since <= GRANT_SLEEP_US:
                continue
            current = holders.get(target)
            if current and current.flush_end is None and event.at_us - current.granted < 10_000:
                continue  # a holder woken from a long wait for something else (an LWLock)
            holder = holders.pop(event.pid, None)
            if holder is not None and holder.flush_end is not None:
                holder.next_granted = event.at_us
                if holder.complete():
                    cycles.append(holder)
            holders[target] = Cycle(granted=event.at_us)
        elif event.name == "syscalls:sys_enter_fdatasync":
            holder = holders.get(event.pid)
            if holder and holder.running is not None and holder.flush_start is None:
                holder.flush_start = event.at_us
        elif event.name == "syscalls:sys_exit_fdatasync":
            holder = holders.get(event.pid)
            if holder and holder.flush_start is not None and holder.flush_end is None:
                holder.flush_end = event.at_us
    return cycles


def wake_placement(wakeup: Event) -> str:
    """Who woke a task, and whether the scheduler queued it on the waker's own CPU."""
    cpu = _WAKEUP_CPU.search(wakeup.detail)
    where = "its CPU" if cpu is not None and int(cpu[1]) == wakeup.cpu else "another CPU"
    return f"(woken by {wakeup.comm} onto {where})"


def _span(start: str, end: str) -> Callable[[Cycle], float]:
    def between(cycle: Cycle) -> float:
        return float(getattr(cycle, end)) - float(getattr(cycle, start))

    return between


PHASES: list[tuple[str, Callable[[Cycle], float]]] = [
    ("granted → on a CPU", _span("granted", "running")),
    ("on a CPU → WAL flush", _span("running", "flush_start")),
    ("… of which runnable, off the CPU", lambda cycle: cycle.runnable_off_cpu),
    ("… of which asleep (a lock, I/O)", lambda cycle: cycle.asleep),
    ("WAL flush (fdatasync)", _span("flush_start", "flush_end")),
    ("flush → next buyer granted", _span("flush_end", "next_granted")),
    ("whole cycle", _span("granted", "next_granted")),
]


def summary_rows(cycles: list[Cycle]) -> list[tuple[str, float, float]]:
    """(phase, median µs, mean µs) for every phase of the cycles."""
    rows = []
    for name, measure in PHASES:
        values = [measure(cycle) for cycle in cycles]
        rows.append((name, statistics.median(values), statistics.mean(values)))
    return rows


def preemptions(cycles: list[Cycle]) -> Counter[str]:
    """Per holder, how often each program took its CPU before its flush."""
    total: Counter[str] = Counter()
    for cycle in cycles:
        total.update(cycle.preempted_by)
    return total


def trace(
    seconds: float, start_after: float, run_driver: Callable[[], float]
) -> tuple[float, list[Cycle]]:
    """Runs the driver (its purchases per second) while perf traces `seconds` of it."""
    folder = Path(tempfile.mkdtemp())
    data = folder / "perf.data"
    events = ",".join(TRACEPOINTS)
    recorder = subprocess.Popen(
        [
            "sh",
            "-c",
            f"sleep {start_after}; exec perf record -q -a -e {events} -o {data} sleep {seconds}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rate = run_driver()
    if recorder.wait() != 0:
        raise RuntimeError("perf record failed (root and linux-perf needed)")
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,pid,cpu,time,event,trace"],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(folder)
    return rate, handover_cycles(parse(script.stdout.splitlines()))


def section(title: str, rate: float, cycles: list[Cycle]) -> list[str]:
    lines = [
        f"### {title}: {rate:,.0f} purchases/s, {len(cycles):,} cycles traced",
        "",
        "| phase | median µs | mean µs |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {median:,.0f} | {mean:,.0f} |" for name, median, mean in summary_rows(cycles)
    ]
    taken = preemptions(cycles)
    who = ", ".join(f"{comm} {count / len(cycles):.2f}" for comm, count in taken.most_common(3))
    lines += ["", f"Holder's CPU taken before its flush, per cycle: {who or 'never'}."]
    slept = [us for cycle in cycles for us in cycle.preemptors_slept]
    if slept:
        lines.append(
            f"The process that took it had slept a median {statistics.median(slept):,.0f} µs "
            "before it was woken."
        )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="each driver's run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "HANDOVER.md")
    args = parser.parse_args()
    for tool in ("perf", "pgbench"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    traced = max(1.0, args.seconds / 3)
    with admin_url() as admin:
        url, products = prepare(admin)
        hot = products[0]
        python_rate, python_cycles = trace(
            traced,
            traced,
            lambda: asyncio.run(drive(url, CLIENTS, args.seconds, [hot], ours))[0],
        )
        pgbench_rate, pgbench_cycles = trace(
            traced, traced, lambda: ours_via_pgbench(url, CLIENTS, args.seconds, hot)
        )
        paused_rate, paused_cycles = trace(
            traced,
            traced,
            lambda: ours_via_pgbench(url, CLIENTS, args.seconds, hot, think_us=THINK_US),
        )
    lines = [
        "# Hot product hand-over, traced",
        "",
        *provenance(
            database_command("bench.purchase.handover"),
            setup="PostgreSQL on the same machine",
        ),
        "",
        f"`purchase()` on one hot product at {CLIENTS} clients, each driver run for "
        f"{args.seconds:.0f} s and traced for {traced:.0f} s of it (see the module docstring "
        "for what a cycle is).",
        "",
        *section("Python client (as bench/purchase's *ours*)", python_rate, python_cycles),
        *section("pgbench as the client", pgbench_rate, pgbench_cycles),
        *section(
            f"pgbench as the client, pausing {THINK_US} µs before each purchase",
            paused_rate,
            paused_cycles,
        ),
    ]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
