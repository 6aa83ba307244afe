"""Embedded defaults for local use: a real PostgreSQL 16 from the `pgserver` wheel and a
development JWT secret, both kept in the data folder (`EDGEMART_DATA_DIR`).

Roles as in production (docs/operations.md#database-roles): the migrations run as the server's
superuser, which owns the schema; the application connects as `edgemart_api`, a login member
of the group `edgemart_app` that owns nothing (`application_url`), so the database's
row-level security applies to it.

Who stops the embedded server (docs/decisions/0006-command-line.md): every process that uses
it (`serve`, `migrate`, `seed`) holds a handle, its pid in pgserver's `.handle_pids.json`, and
the last one to let go stops it. A handle whose process is gone (a `serve` killed with SIGKILL)
is dropped when the next process starts; a server still running with no live handle is an
orphan, which that process shuts down cleanly and starts again as its own. Stopping says what
happened: "stopped" only when the server is down, otherwise who still holds it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from edgemart.errors import EdgemartError
from edgemart.logging import logger

EMBEDDED_DATABASE = "edgemart"
ORPHAN_STOP_TIMEOUT_S = 30.0
APPLICATION_GROUP_ROLE = "edgemart_app"
"""The group role the migrations create and grant what the application needs; it owns
nothing, so row-level security holds for its members (docs/operations.md#database-roles)."""
APPLICATION_LOGIN_ROLE = "edgemart_api"


class EmbeddedDatabaseError(EdgemartError):
    """The embedded database cannot be found, started or stopped."""


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, listening on a Unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self._server: Any = None

    def exists(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def start(self) -> str:
        """Start (or attach to) the server; returns the `edgemart` database's URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from pgserver import get_server  # type: ignore[attr-defined]
            from pgserver.postgres_server import PostgresServer

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            with PostgresServer._lock:
                self._drop_dead_handles_and_orphan()
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        admin_url: str = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE]
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
        url: str = self._server.get_uri(EMBEDDED_DATABASE)
        others = self._other_holders()
        if others:
            logger.info(
                "embedded PostgreSQL in %s is also used by pid %s: it keeps running until the "
                "last of them stops",
                self.pgdata,
                ", ".join(map(str, others)),
            )
        logger.info("embedded PostgreSQL running in %s: %s", self.pgdata, url)
        return url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.cleanup()
        if postmaster_pid(self.pgdata) is None:
            logger.info("embedded PostgreSQL stopped")
            return
        others = self._other_holders()
        logger.info(
            "embedded PostgreSQL in %s left running: still used by pid %s",
            self.pgdata,
            ", ".join(map(str, others)) or "(none alive)",
        )

    def _handles_path(self) -> Path:
        return self.pgdata / ".handle_pids.json"

    def _other_holders(self) -> list[int]:
        return [pid for pid in read_handles(self._handles_path()) if pid != os.getpid()]

    def _drop_dead_handles_and_orphan(self) -> None:
        """Called under pgserver's inter-process lock, before taking a handle."""
        path = self._handles_path()
        handles = read_handles(path)
        live = [pid for pid in handles if process_is_alive(pid)]
        if live != handles:
            path.write_text(json.dumps(live), encoding="utf-8")
        server_pid = postmaster_pid(self.pgdata)
        if live or server_pid is None:
            return
        dead = ", ".join(map(str, handles)) or "none recorded"
        logger.warning(
            "embedded PostgreSQL (pid %d) in %s was left running by a process that did not "
            "stop it (pid %s, killed?): shutting it down to start it again as this one's own",
            server_pid,
            self.pgdata,
            dead,
        )
        stop_postmaster(self.pgdata, server_pid)


@contextmanager
def database_url_for(database_url: str | None, data_dir: Path, *, create: bool) -> Iterator[str]:
    """`database_url` when set; otherwise the embedded database in `data_dir`, started (or
    attached to) for the duration of the block. `create=False` refuses a data folder that
    holds no database yet rather than making a new one."""
    if database_url is not None:
        yield database_url
        return
    embedded = EmbeddedPostgres(data_dir)
    if not create and not embedded.exists():
        raise EmbeddedDatabaseError(
            f"DATABASE_URL is not set and there is no embedded database in {embedded.pgdata}: "
            "set EDGEMART_DATA_DIR (or --data-dir) to the data folder `edgemart serve` uses, "
            "or set DATABASE_URL"
        )
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def application_url(owner_url: str) -> str:
    """The embedded database's URL for the application: the login role `edgemart_api`, a
    member of `edgemart_app`, made once (the migrations, run as the embedded server's
    superuser, made the group). The server listens on a Unix socket in the data folder only,
    with trust authentication, so the role needs no password."""
    login = sql.Identifier(APPLICATION_LOGIN_ROLE)
    group = sql.Identifier(APPLICATION_GROUP_ROLE)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        if not _role_exists(conn, APPLICATION_GROUP_ROLE):
            raise EmbeddedDatabaseError(
                f"the embedded database has no role {APPLICATION_GROUP_ROLE}: it is not migrated"
            )
        if not _role_exists(conn, APPLICATION_LOGIN_ROLE):
            # Two serves starting at once may both get here: the second one's CREATE fails.
            with suppress(psycopg.errors.DuplicateObject):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(login))
        conn.execute(sql.SQL("GRANT {} TO {}").format(group, login))
    return make_conninfo(owner_url, user=APPLICATION_LOGIN_ROLE)


def _role_exists(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None


def read_handles(path: Path) -> list[int]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(values, list):
        return []
    return [value for value in values if isinstance(value, int)]


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the server running on `pgdata`, or None when none is."""
    try:
        first_line = (pgdata / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
        pid = int(first_line.strip())
    except (OSError, ValueError):
        return None
    return pid if process_is_alive(pid) else None


def stop_postmaster(pgdata: Path, pid: int) -> None:
    """A fast shutdown (SIGINT: sessions are ended, the data is checkpointed), waited for."""
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + ORPHAN_STOP_TIMEOUT_S
    while postmaster_pid(pgdata) == pid:
        if time.monotonic() > deadline:
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL (pid {pid}) in {pgdata} did not stop within "
                f"{ORPHAN_STOP_TIMEOUT_S:.0f} s; stop it (kill -INT {pid}) and try again"
            )
        time.sleep(0.1)


def development_jwt_secret(data_dir: Path) -> str:
    """The HS256 secret for local development, created once per data folder.

    Used by `edgemart serve` only when neither JWT_SECRET nor JWT_JWKS_URL is set; it logs
    that it does so. `edgemart token` reads the same file (`existing_development_jwt_secret`)
    and never creates one.
    """
    existing = existing_development_jwt_secret(data_dir)
    if existing is not None:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    descriptor = os.open(jwt_secret_path(data_dir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    return secret


def existing_development_jwt_secret(data_dir: Path) -> str | None:
    path = jwt_secret_path(data_dir)
    if not path.exists():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def jwt_secret_path(data_dir: Path) -> Path:
    return data_dir / "jwt-secret"
