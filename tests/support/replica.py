"""A PostgreSQL primary and a streaming replica of it, both the test session's own.

The machine's PostgreSQL allows no replication (its pg_hba has no replication entry, and its
configuration is not ours to change), so `replicated_postgres` starts its own primary
(`initdb`, `wal_level=replica`, replication allowed from loopback in its own pg_hba) on a free
loopback port, migrates its `edgemart` database with the project's migrations, and clones it
with `pg_basebackup -R` into a replica streaming from it over a replication slot, on another
free port. Both live in one temporary folder, are started as child processes and are stopped
by their pid; nothing listens on a Unix socket.

PostgreSQL refuses to run as root: as root, the servers and tools run as the `postgres` user
(no `runuser` in between, so the pid we hold is the postmaster's) and the folder is theirs.
Each server is started in a session of its own, so `kill()` can end the postmaster and every
backend at once (`killpg` on the postmaster's pid), like a machine that lost power.

Tests make the replica lag with `pause_replay()` (`pg_wal_replay_pause()`), take it away with
`kill_replica()` and bring it back with `start_replica()`; `reset()` puts everything back.
Session-scoped: initdb, the migrations and the base backup take a few seconds, once.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from edgemart.migrate import apply_migrations

DATABASE = "edgemart"
SLOT = "edgemart_test_replica"
START_TIMEOUT_S = 60.0


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian's layout), else pgserver's."""
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if installed:
        return installed[-1].parent
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    if (bundled / "pg_basebackup").exists():
        return bundled
    raise RuntimeError("no PostgreSQL binaries with pg_basebackup found")


@dataclass(frozen=True)
class RunAs:
    """Who the servers run as: the `postgres` user when we are root, else ourselves."""

    uid: int | None
    gid: int | None

    @classmethod
    def for_this_process(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls(None, None)
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root needs a `postgres` user to run PostgreSQL"
            ) from None
        return cls(account.pw_uid, account.pw_gid)

    def own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def popen_kwargs(self) -> dict[str, object]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def free_port() -> int:
    from tests.conftest import unused_port

    return unused_port()


class Cluster:
    """One PostgreSQL server: a data folder, a port, and the postmaster while it runs."""

    def __init__(self, name: str, data_dir: Path, port: int, bindir: Path, run_as: RunAs) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = port
        self.bindir = bindir
        self.run_as = run_as
        self.log_path = data_dir.parent / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def run(self, tool: str, *args: str) -> None:
        """Run one of PostgreSQL's tools as the servers' user; its output goes to the log."""
        with self.log_path.open("ab") as log:
            subprocess.run(
                [str(self.bindir / tool), *args],
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir.parent,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                timeout=START_TIMEOUT_S,
                **self.run_as.popen_kwargs(),  # type: ignore[arg-type]
            )

    def create_data_dir(self, tool: str, *args: str) -> None:
        """Make the data folder (private, the servers' user's) and fill it with `tool`
        (initdb, or pg_basebackup from a primary) given `-D` the folder and `args`."""
        self.data_dir.mkdir(mode=0o700)
        self.run_as.own(self.data_dir)
        self.run(tool, "-D", str(self.data_dir), *args)

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir.parent,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                start_new_session=True,  # its own process group: kill() ends every backend
                **self.run_as.popen_kwargs(),  # type: ignore[arg-type]
            )
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the postmaster and every process of its group (its backends), by its
        pid: gone at once, as if its machine had failed."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        self._wait_group_gone(process.pid)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), waited for."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        self._wait_group_gone(process.pid)

    @staticmethod
    def _wait_group_gone(pgid: int) -> None:
        """The backends of a killed postmaster hold its shared memory until they exit; a new
        postmaster on the same folder refuses to start while they do. (A zombie no longer
        holds anything: a container's pid 1 may never reap it.)"""
        deadline = time.monotonic() + 30
        while live_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes of group `pgid` that have not exited (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


class ReplicatedPostgres:
    """A primary and a streaming replica of it, with the levers the tests pull."""

    def __init__(self, root: Path, bindir: Path, run_as: RunAs) -> None:
        self.root = root
        self.primary = Cluster("primary", root / "primary", free_port(), bindir, run_as)
        self.replica = Cluster("replica", root / "replica", free_port(), bindir, run_as)

    @property
    def primary_url(self) -> str:
        return self.primary.url()

    @property
    def replica_url(self) -> str:
        return self.replica.url()

    def create(self) -> None:
        primary = self.primary
        primary.create_data_dir(
            "initdb",
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (primary.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# edgemart test primary\n"
                "wal_level = replica\n"
                "max_wal_senders = 5\n"
                "max_replication_slots = 5\n"
                "fsync = off\n"
                "max_connections = 100\n"
                "shared_buffers = 32MB\n"
            )
        # Replication and connections from loopback only, without passwords: this cluster's
        # own pg_hba, not the machine's.
        (primary.data_dir / "pg_hba.conf").write_text(
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
        )
        primary.start()
        with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"'.encode())
        apply_migrations(primary.url())
        replica = self.replica
        replica.create_data_dir(
            "pg_basebackup",
            "-d",
            f"host=127.0.0.1 port={primary.port} user=postgres",
            "-R",  # standby.signal, and primary_conninfo in postgresql.auto.conf
            "-C",
            "-S",
            SLOT,  # the primary keeps the WAL a stopped replica still needs
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        with (replica.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# edgemart test replica\nhot_standby = on\n")
        replica.start()
        self.wait_caught_up()

    # ---- levers ----

    def replica_sql(self, statement: str) -> object:
        with psycopg.connect(self.replica.url(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(statement.encode()).fetchone()
        return None if row is None else row[0]

    def pause_replay(self) -> None:
        """The replica keeps receiving WAL but applies none of it: it lags from now on."""
        self.replica_sql("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + 10
        while self.replica_sql("SELECT pg_get_wal_replay_pause_state()") != "paused":
            if time.monotonic() > deadline:
                raise RuntimeError("replay did not pause")
            time.sleep(0.02)

    def resume_replay(self) -> None:
        self.replica_sql("SELECT pg_wal_replay_resume()")

    def kill_replica(self) -> None:
        self.replica.kill()

    def start_replica(self) -> None:
        self.replica.start()

    def primary_lsn(self) -> str:
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def wait_caught_up(self, timeout_s: float = 30.0) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        target = self.primary_lsn()
        deadline = time.monotonic() + timeout_s
        while True:
            replayed = self.replica_sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            if replayed:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not reach {target}")
            time.sleep(0.02)

    def reset(self) -> None:
        """Replica running, replaying, caught up: how every test finds it."""
        if not self.replica.running:
            self.start_replica()
        self.resume_replay()
        self.wait_caught_up()

    def close(self) -> None:
        self.replica.stop()
        self.primary.stop()


@pytest.fixture(scope="session")
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    """A migrated primary and its streaming replica, for the session (see the module)."""
    run_as = RunAs.for_this_process()
    # Not under pytest's basetemp: its folders are private to us, and the servers' user must
    # reach its data folders.
    root = Path(tempfile.mkdtemp(prefix="edgemart-replica-"))
    root.chmod(0o755)
    run_as.own(root)
    pair = ReplicatedPostgres(root, postgres_bindir(), run_as)
    try:
        pair.create()
        yield pair
    finally:
        pair.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def replication(replicated_postgres: ReplicatedPostgres) -> Iterator[ReplicatedPostgres]:
    """The session's primary and replica, reset before and after the test."""
    replicated_postgres.reset()
    yield replicated_postgres
    replicated_postgres.reset()
