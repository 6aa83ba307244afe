"""A real transaction pooler for tests: Debian's PgBouncer in transaction mode.

It listens on a free loopback port in front of the suite's PostgreSQL and serves every
database there by name (`* =` in `[databases]`), so a test reaches its own database through
it by swapping host and port (`PgBouncer.url`). Authentication is `trust` for the one user of
the suite's URL. The server pool per database is small (`POOL_SIZE`), smaller than the
clients' pools, so clients really do take turns on server connections: session state one
client leaves behind (a `SET`, a session advisory lock, a prepared statement) reaches another,
as behind RDS Proxy or Supavisor. Start-up parameters PgBouncer does not track (`options`)
are refused, as by those poolers; nothing is ignored, and prepared statements are not carried
across server connections (PgBouncer 1.21+ could: turned off).

PgBouncer refuses to run as root; started by root, it switches to `RUN_AS` after reading its
files. It logs to a file of the test's temp directory, is stopped by its pid, and uses no
Unix socket or pid file.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.processes import stop_process

POOL_SIZE = 4  # server connections per (database, user)
RUN_AS = "postgres"  # when started by root; Debian's PostgreSQL and PgBouncer run as it
EXECUTABLE = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


def version() -> tuple[int, ...]:
    """The installed PgBouncer's version, e.g. (1, 18, 0)."""
    assert EXECUTABLE is not None
    out = subprocess.run([EXECUTABLE, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"PgBouncer (\d+(?:\.\d+)*)", out.stdout)
    assert match, out.stdout
    return tuple(int(part) for part in match[1].split("."))


class PgBouncer:
    def __init__(self, upstream_url: str, directory: Path, port: int) -> None:
        upstream = conninfo_to_dict(upstream_url)
        self.host = str(upstream.get("host") or "127.0.0.1")
        self.upstream_port = str(upstream.get("port") or "5432")
        self.user = str(upstream.get("user") or pwd.getpwuid(os.getuid()).pw_name)
        self.upstream_url = upstream_url
        self.directory = directory
        self.port = port
        self.log_path = directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, conninfo: str) -> str:
        """`conninfo` (a database of the suite's server) reached through PgBouncer."""
        return make_conninfo(conninfo, host="127.0.0.1", port=str(self.port))

    def config(self) -> str:
        lines = [
            "[databases]",
            f"* = host={self.host} port={self.upstream_port}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.directory / 'userlist.txt'}",
            f"admin_users = {self.user}",
            "pool_mode = transaction",
            f"default_pool_size = {POOL_SIZE}",
            "reserve_pool_size = 0",
            "max_client_conn = 1000",
            # Test databases come and go: retry a failed server login after 1 s, not 15.
            "server_login_retry = 1",
        ]
        if version() >= (1, 21):
            # Newer PgBouncers can track prepared statements across server connections;
            # RDS Proxy and Supavisor do not, so neither does the pooler edgemart is tested on.
            lines.append("max_prepared_statements = 0")
        if os.geteuid() == 0:
            lines.append(f"user = {RUN_AS}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if EXECUTABLE is None:
            raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(self.config())
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [EXECUTABLE, str(ini)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.url(self.upstream_url), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
