"""A fleet of real `edgemart serve`s on one database (each with its own port and run folder)
runs the scheduled jobs in one process at a time: a standby takes over within 30 s of the
leader being killed outright, with the default lease, and each job keeps running once per
period; a leader paused past its lease's end (SIGSTOP) runs nothing once it resumes, since
its lease is no longer honoured.

Job runs are read from the serves' logs: each job logs its report when it ends, and every
line of a leader's job run carries its lease term; the line where a process starts leading
names its pid and term.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.integration.test_serve_workers import serve_with_workers
from tests.support.serve import Serve

JOB = "score_listings"
LEADS = "this process leads: it holds the scheduler lease"


@dataclass(frozen=True)
class Run:
    at: float
    """When the run ended (its report's log line), as a Unix time."""
    term: int
    serve: str


@dataclass(frozen=True)
class Tenure:
    at: float
    term: int
    pid: int
    serve: str


def timestamp(record: dict[str, object]) -> float:
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


def runs(serves: dict[str, Serve]) -> list[Run]:
    """Every run of JOB in the fleet, by the time it ended."""
    found = [
        Run(timestamp(record), int(str(record["lease_term"])), name)
        for name, serve in serves.items()
        for record in serve.records()
        if str(record["message"]).startswith(f"{JOB}: {{")
    ]
    return sorted(found, key=lambda run: run.at)


def tenures(serves: dict[str, Serve]) -> list[Tenure]:
    """Each time a process started leading, in order."""
    found = []
    for name, serve in serves.items():
        for record in serve.records():
            if str(record["message"]).startswith(LEADS):
                pid = int(str(record["lease_holder"]).split(":")[-2])
                found.append(Tenure(timestamp(record), int(str(record["lease_term"])), pid, name))
    return sorted(found, key=lambda tenure: tenure.at)


def standing_by(serve: Serve) -> int:
    """How many times a process of `serve` found the lease held by another."""
    return sum(message.startswith("another process leads") for message in serve.messages())


@contextmanager
def fleet(
    database_url: str, tmp_path: Path, env: dict[str, str], **workers: int
) -> Iterator[dict[str, Serve]]:
    """One serve per keyword (its name, its number of workers), started in that order, each
    with `env`; all stopped when the block ends."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                serve_with_workers(database_url, tmp_path, workers=count, env=env, name=name)
            )
            for name, count in workers.items()
        }


def wait_for(condition: object, what: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        time.sleep(0.1)


def assert_once_per_period(found: Iterable[Run], every_s: float) -> None:
    """No two runs of the job closer than its period: never two leaders running it. (A run
    starts a period after the previous one ended, in the one process that runs it.)"""
    ends = [run.at for run in found]
    gaps = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
    assert all(gap >= every_s - 0.05 for gap in gaps), gaps


def test_a_standby_takes_over_from_a_killed_leader_within_30_s_and_jobs_run_once(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """Three schedulers in two serves (`--workers 2` and a single one), default lease."""
    env = {"SCHEDULE_INTERVALS": f"{JOB}=1"}
    with fleet(migrated_database_url, tmp_path, env, pair=2, single=1) as serves:
        wait_for(lambda: len(runs(serves)) >= 3, "the leader's first runs")
        time.sleep(5)  # every scheduler has asked for the lease several times by now
        before = runs(serves)
        [leader] = tenures(serves)  # one process ever led
        assert {(run.term, run.serve) for run in before} == {(leader.term, leader.serve)}
        assert_once_per_period(before, 1.0)

        killed_at = time.time()
        os.kill(leader.pid, signal.SIGKILL)
        wait_for(
            lambda: any(run.term > leader.term for run in runs(serves)),
            "a standby's first run",
        )
        [successor] = tenures(serves)[1:]
        first_run = next(run for run in runs(serves) if run.term > leader.term)
        print(
            f"\nleader (pid {leader.pid}, {leader.serve}) killed; a standby (pid "
            f"{successor.pid}, {successor.serve}) led {successor.at - killed_at:.1f} s later "
            f"and ran {JOB} {first_run.at - killed_at:.1f} s after the kill"
        )
        assert first_run.at - killed_at < 30
        assert successor.term == leader.term + 1 and successor.pid != leader.pid

        time.sleep(4)
        after = runs(serves)
        assert {run.term for run in after if run.at > killed_at} == {successor.term}
        assert {run.serve for run in after if run.term == successor.term} == {successor.serve}
        assert_once_per_period(after, 1.0)
        assert [t.term for t in tenures(serves)] == [leader.term, successor.term]


def test_a_leader_paused_past_its_lease_runs_nothing_when_it_resumes(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """SIGSTOP the leader right after a run: its lease (3 s) ends, the other serve takes it
    and runs the job; SIGCONT: the old leader's deadline has passed, so it stops leading
    without another run, and its renewal is refused (the lease is the other's now)."""
    every_s = 2.0
    env = {"SCHEDULE_INTERVALS": f"{JOB}={every_s:g}", "SCHEDULER_LEASE_TTL_S": "3"}
    with fleet(migrated_database_url, tmp_path, env, one=1, two=1) as serves:
        wait_for(lambda: len(runs(serves)) >= 2, "the leader's first runs")
        [leader] = tenures(serves)
        paused = serves[leader.serve]
        stood_by_before = standing_by(paused)
        seen = len(runs(serves))
        wait_for(lambda: len(runs(serves)) > seen, "a fresh run", within_s=10)
        os.kill(leader.pid, signal.SIGSTOP)  # between two runs: it sleeps for 2 s
        stopped_at = time.time()
        try:
            wait_for(
                lambda: any(run.term > leader.term for run in runs(serves)),
                "the other serve's first run",
            )
            time.sleep(3)
        finally:
            os.kill(leader.pid, signal.SIGCONT)
        resumed_at = time.time()
        wait_for(
            lambda: standing_by(paused) > stood_by_before,
            "the resumed leader standing by",
            within_s=20,
        )
        time.sleep(every_s + 1)  # long enough for a run it should not make

        found = runs(serves)
        old = [run for run in found if run.term == leader.term]
        new = [run for run in found if run.term > leader.term]
        assert all(run.at < stopped_at for run in old), (stopped_at, old[-3:])
        assert new and all(run.serve != leader.serve for run in new)
        assert any(run.at > resumed_at for run in new)  # the new leader went on
        assert_once_per_period(found, every_s)
        stepped_down = [
            record
            for record in paused.records()
            if str(record["message"]).startswith("this process stops leading")
        ]
        assert stepped_down and timestamp(stepped_down[0]) >= resumed_at - 0.5
