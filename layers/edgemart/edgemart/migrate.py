"""Schema migrations: plain SQL files in `edgemart/migrations`, applied in order.

`NNNN_name.sql` files are applied in version order, each in its own transaction together with
its row in `schema_migrations`, so a failed file leaves nothing half-applied. A session-level
advisory lock serialises concurrent runners (two Lambdas, a gateway and a CLI): the second
waits (polling, see `_take_migration_lock`), then finds nothing left to do. An applied
file whose text changed is refused rather than silently skipped.

`CREATE INDEX CONCURRENTLY` cannot run in a transaction block. A file whose first line is
`-- edgemart: no-transaction` is run one statement at a time in autocommit instead; such a file
must be safe to re-run (`IF NOT EXISTS`), since a crash can stop it part-way. Statements in it
are separated by a `;` at the end of a line.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources

import psycopg

from edgemart.errors import EdgemartError
from edgemart.logging import logger

# pg_advisory_lock key: "edgemart" as 8 ASCII bytes, kept positive for bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"edgemart", "big") & 0x7FFF_FFFF_FFFF_FFFF
NO_TRANSACTION_MARKER = "-- edgemart: no-transaction"
_FILENAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(EdgemartError):
    """The migration files or the database's migration history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION_MARKER)

    def statements(self) -> list[str]:
        """The file's statements, for the no-transaction path."""
        parts = re.split(r";[ \t]*(?:\n|$)", self.sql)
        return [part.strip() for part in parts if _has_code(part)]


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


def load_migrations() -> list[Migration]:
    folder = resources.files("edgemart") / "migrations"
    migrations: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILENAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file name {entry.name!r} is not NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return migrations


def apply_migrations(
    conninfo: str, migrations: list[Migration] | None = None, *, lock_timeout_s: float = 600.0
) -> list[Migration]:
    """Apply every pending migration; returns the ones this call applied."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _take_migration_lock(conn, lock_timeout_s)
        try:
            conn.execute(_CREATE_VERSION_TABLE)
            rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            applied = {int(str(version)): str(checksum) for version, checksum in rows}
            for migration in migrations:
                if migration.version in applied:
                    _check_unchanged(migration, applied[migration.version])
                    continue
                _apply_one(conn, migration)
                applied_now.append(migration)
                logger.info("applied migration %04d_%s", migration.version, migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
    return applied_now


def pending_migrations(conninfo: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """The migrations not applied to the database yet: all of them when it was never migrated.
    Lets a command that needs the schema refuse clearly instead of failing on a missing table."""
    migrations = load_migrations() if migrations is None else migrations
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not (row and row[0]):
            return list(migrations)
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    applied = {int(str(version)) for (version,) in rows}
    return [migration for migration in migrations if migration.version not in applied]


def _take_migration_lock(conn: psycopg.Connection[tuple[object, ...]], timeout_s: float) -> None:
    """Poll with `pg_try_advisory_lock` rather than block in `pg_advisory_lock`: a runner
    blocked inside a statement holds a transaction open, and `CREATE INDEX CONCURRENTLY` in the
    runner that holds the lock waits for every open transaction: a deadlock."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY]).fetchone()
        if row and row[0]:
            return
        if time.monotonic() > deadline:
            raise MigrationError(f"another migration run held the lock for over {timeout_s} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _check_unchanged(migration: Migration, recorded_checksum: str) -> None:
    if recorded_checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} was changed after it was "
            "applied; add a new migration instead of editing an applied one"
        )


def _apply_one(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
    values = [migration.version, migration.name, migration.checksum]
    if migration.transactional:
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(record, values)
        return
    for statement in migration.statements():
        conn.execute(statement.encode())
    conn.execute(record, values)
