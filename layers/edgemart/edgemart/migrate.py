"""Schema migrations and SQL definitions, applied under one migration lock.

Migrations are the `NNNN_name.sql` files in `edgemart/migrations`: they change the schema
(tables, columns, indexes, constraints, data moves) and are applied once, in version order,
each in its own transaction together with its row in `schema_migrations`, so a failed file
leaves nothing half-applied. An applied file whose text changed is refused rather than
silently skipped. Every function, trigger function and view lives instead in one file of its
own in `edgemart/sql` (`edgemart.definitions`), applied after the migrations and again
whenever it changes (docs/decisions/0031-sql-definitions.md).

A lock serialises concurrent runners (a deploy script, a gateway and a CLI): the second waits
(polling), then finds nothing left to do. It is a transaction-level advisory lock held by a
transaction left open, for the whole run, on a connection of its own (`MigrationLock`); the
work runs on a second connection. Nothing depends on session state, so the runner works
through a transaction pooler (PgBouncer, RDS Proxy, Supavisor in transaction mode) as well as
directly: a pooler keeps a transaction on one server connection, and ends it (releasing the
lock) when the runner's connection goes away. Neither connection uses server-side prepared
statements.

`CREATE INDEX CONCURRENTLY` cannot run in a transaction block. A file whose first line is
`-- edgemart: no-transaction` is run one statement at a time in autocommit instead; such a file
must be safe to re-run (`IF NOT EXISTS`), since a crash can stop it part-way. Statements in it
are separated by a `;` at the end of a line (outside a dollar-quoted body, so a DO block
that takes its locks in a chosen order is one statement). Two things help such a file change a live
database without long locks or guesswork:

- A statement headed by the comment line `-- edgemart: execute-results` is a query whose rows are
  statements: each is run in turn, in autocommit (per-partition `CONCURRENTLY` builds, or a
  step guarded by a catalog check so that a re-run skips what is done).
- A statement that gives up waiting for a lock (`lock_timeout`, which the file sets around
  its short-lock steps so the application never queues long behind one), or that lost a
  deadlock against the application, is tried again after a pause, up to `LOCK_RETRIES`
  times: it did nothing, and the runner holds no lock between tries. (So is a transactional
  migration, as a whole.) A step that locks several tables takes them in the order the
  application does (a DO block with LOCK TABLE), or it could wait on a transaction that
  waits on it until its lock_timeout, every time.

A migration that needs a definition before it runs (an index on a function's results, a data
move that calls one) says so with `-- edgemart: requires name`: that definition, and what it
requires, is brought up to date just before the migration.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import psycopg

from edgemart.definitions import (
    CREATE_DEFINITIONS_TABLE,
    Definition,
    RecordedSql,
    apply_definition,
    drop_definition,
    load_definitions,
    present_objects,
    recorded_definitions,
    requirements,
    with_requirements,
)
from edgemart.errors import EdgemartError
from edgemart.logging import logger

# The migration lock's advisory key: "edgemart" as 8 ASCII bytes, kept positive for bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"edgemart", "big") & 0x7FFF_FFFF_FFFF_FFFF
_TRY_LOCK = f"SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK_KEY})".encode()
NO_TRANSACTION_MARKER = "-- edgemart: no-transaction"
EXECUTE_RESULTS_MARKER = "-- edgemart: execute-results"
LOCK_RETRIES = 20
LOCK_RETRY_PAUSE_S = 0.5
_LOCK_ERRORS = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)
_FILENAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
_DOLLAR_QUOTE = re.compile(r"\$[A-Za-z_0-9]*\$")

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""

# Before SQL definitions moved to edgemart/sql, migrations re-created functions and views
# themselves; a database they built has `schema_migrations` rows and no `schema_definitions`,
# and its migration files' checksums no longer match. It is refused, not patched up.
_OLD_CHAIN = """
SELECT to_regclass('schema_definitions') IS NULL
       AND EXISTS (SELECT 1 FROM schema_migrations)
"""
OLD_CHAIN_MESSAGE = (
    "this database was migrated by an older edgemart, whose migrations also held the SQL "
    "functions (now in edgemart/sql), and cannot be upgraded in place: recreate it (for the "
    "embedded database, delete its data folder, .edgemart-data by default; else drop and "
    "create the database) and run `edgemart migrate` again"
)


class MigrationError(EdgemartError):
    """The migration files or the database's migration history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration(RecordedSql):
    version: int
    name: str
    sql: str

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION_MARKER)

    @property
    def requires(self) -> tuple[str, ...]:
        """The definitions this migration needs before it runs."""
        return requirements(self.sql)

    def statements(self) -> list[str]:
        """The file's statements, for the no-transaction path: split at each `;` that ends a
        line, but not inside a dollar-quoted body (a DO block's or a function's)."""
        text, parts, start, position = self.sql, [], 0, 0
        while True:
            end = _STATEMENT_END.search(text, position)
            quote = _DOLLAR_QUOTE.search(text, position)
            if quote is not None and (end is None or quote.start() < end.start()):
                close = text.find(quote.group(), quote.end())
                position = len(text) if close < 0 else close + len(quote.group())
                continue
            if end is None:
                break
            parts.append(text[start : end.start()])
            start = position = end.end()
        parts.append(text[start:])
        return [part.strip() for part in parts if _has_code(part)]


@dataclass(slots=True)
class MigrationRun:
    """What one `apply_migrations` call applied."""

    migrations: list[Migration] = field(default_factory=list)
    definitions: list[Definition] = field(default_factory=list)


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
    conninfo: str,
    migrations: list[Migration] | None = None,
    definitions: Traversable | Path | None = None,
    *,
    through: int | None = None,
    lock_timeout_s: float = 600.0,
) -> MigrationRun:
    """Apply every pending migration, then every definition that changed or is missing.

    `definitions` is the folder of definition files (the layer's `sql/` by default).
    `through`: stop after that migration version, and leave the definitions but those the
    applied migrations require (migrating a database step by step)."""
    migrations = load_migrations() if migrations is None else migrations
    ordered = load_definitions(definitions)
    for migration in migrations:
        with_requirements(migration.requires, ordered)  # loud before anything is applied
    run = MigrationRun()
    with MigrationLock.held(conninfo, lock_timeout_s) as lock, _connect(conninfo) as conn:
        _prepare_history(conn)
        rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
        applied = {int(str(version)): str(checksum) for version, checksum in rows}
        for migration in migrations:
            if migration.version in applied:
                _check_unchanged(migration, applied[migration.version])
                continue
            if through is not None and migration.version > through:
                break
            lock.check()
            needed = with_requirements(migration.requires, ordered)
            if needed:
                run.definitions += _apply_definitions(conn, needed, for_migration=migration)
            _apply_one(conn, migration)
            run.migrations.append(migration)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
        if through is None:
            lock.check()
            run.definitions += _apply_definitions(conn, ordered, for_migration=None)
    return run


def pending_migrations(conninfo: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """The migrations not applied to the database yet: all of them when it was never migrated.
    Lets a command that needs the schema refuse clearly instead of failing on a missing table."""
    migrations = load_migrations() if migrations is None else migrations
    with _connect(conninfo) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not (row and row[0]):
            return list(migrations)
        _refuse_old_chain(conn)
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    applied = {int(str(version)) for (version,) in rows}
    return [migration for migration in migrations if migration.version not in applied]


def _prepare_history(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Refuse a database of the old migration chain; create both history tables together."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row and row[0]:
        _refuse_old_chain(conn)
    with conn.transaction():
        conn.execute(_CREATE_VERSION_TABLE)
        conn.execute(CREATE_DEFINITIONS_TABLE)


def _refuse_old_chain(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute(_OLD_CHAIN).fetchone()
    if row and row[0]:
        raise MigrationError(OLD_CHAIN_MESSAGE)


def _apply_definitions(
    conn: psycopg.Connection[tuple[object, ...]],
    ordered: list[Definition],
    *,
    for_migration: Migration | None,
) -> list[Definition]:
    """Bring `ordered` up to date in one transaction: a failure leaves the previous set whole,
    and callers never see a function beside an older version of one it calls. After the
    migrations (`for_migration` None), also drop what removed files had created."""
    applied: list[Definition] = []
    with conn.transaction():
        recorded = recorded_definitions(conn)
        if for_migration is None:
            kept = {definition.name for definition in ordered}
            for name in sorted(set(recorded) - kept):
                drop_definition(conn, name)
                logger.info("dropped definition %s: its file was removed", name)
        present = present_objects(conn)
        reindexed = set(for_migration.requires) if for_migration else set()
        for definition in ordered:
            checksum = recorded.get(definition.name)
            if checksum == definition.checksum and definition.name in present:
                continue
            apply_definition(conn, definition, checksum, reindexed=definition.name in reindexed)
            applied.append(definition)
            logger.info("applied definition %s", definition.name)
    return applied


def _connect(conninfo: str, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
    """A connection for the runner. `prepare_threshold=None`: a statement psycopg prepared on
    one server connection is missing on the next behind a transaction pooler."""
    return psycopg.connect(conninfo, autocommit=autocommit, prepare_threshold=None)


class MigrationLock:
    """The lock concurrent runners serialise on: `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`,
    taken in a transaction that stays open for the whole run on a connection of its own.

    Transaction-level, not session-level: behind a transaction pooler a session lock is taken
    on whichever server connection runs the statement, and its unlock may run on another (the
    lock leaks, held by a connection the pooler hands to other clients). A transaction stays on
    one server connection, and a runner that dies takes its transaction, and the lock, with it.

    Runners poll `pg_try_advisory_xact_lock` rather than block in `pg_advisory_xact_lock`: a
    runner blocked inside a statement holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the
    runner holding the lock waits for every transaction with an older snapshot, a deadlock
    (the holder's own lock transaction sits idle between statements without a snapshot, see
    `_try`, and is not waited for). A failed poll ends its transaction before the next.

    The holder calls `check()` before each step: if its lock connection was lost (terminated,
    or closed by an idle-in-transaction timeout), another runner may have started, so it stops
    rather than apply the next step."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn

    @classmethod
    @contextmanager
    def held(cls, conninfo: str, timeout_s: float) -> Iterator[MigrationLock]:
        """Wait up to `timeout_s` for the lock; hold it for the `with` block."""
        with _connect(conninfo, autocommit=False) as conn:
            lock = cls(conn)
            lock._wait(timeout_s)
            try:
                yield lock
            finally:
                with suppress(psycopg.Error):  # a lost connection has released it already
                    conn.rollback()  # ends the transaction, and with it the lock

    def _try(self) -> bool:
        # The key inline, no parameters: psycopg then sends the simple query protocol, whose
        # portal ends with the statement. An extended-protocol portal lives until the next
        # statement and keeps its snapshot, so the idle lock transaction would hold an xmin
        # that `CREATE INDEX CONCURRENTLY` on the other connection waits for: a deadlock.
        row = self.conn.execute(_TRY_LOCK).fetchone()
        return bool(row and row[0])

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while not self._try():
            self.conn.rollback()
            if time.monotonic() > deadline:
                raise MigrationError(f"another migration run held the lock for over {timeout_s} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def check(self) -> None:
        """Raise unless this runner still holds the lock (taking it again in the same
        transaction is harmless for its holder)."""
        try:
            held = self._try()
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())  # one line, as the CLI prints errors
            raise MigrationError(f"lost the migration lock's connection ({reason})") from exc
        if not held:
            raise MigrationError("lost the migration lock to another run")


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
        for attempt in range(1, LOCK_RETRIES + 1):
            try:
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(record, values)
                return
            except _LOCK_ERRORS:
                if attempt == LOCK_RETRIES:
                    raise
                logger.info(
                    "migration %04d could not take its locks; trying again", migration.version
                )
                time.sleep(LOCK_RETRY_PAUSE_S)
    for statement in migration.statements():
        if _executes_results(statement):
            generated = [str(row[0]) for row in _run_statement(conn, statement).fetchall()]
            for text in generated:
                _run_statement(conn, text)
        else:
            _run_statement(conn, statement)
    conn.execute(record, values)


def _executes_results(statement: str) -> bool:
    """Whether the statement's leading comment lines hold the execute-results marker."""
    for line in statement.splitlines():
        text = line.strip()
        if not text:
            continue
        if not text.startswith("--"):
            return False
        if text == EXECUTE_RESULTS_MARKER:
            return True
    return False


def _run_statement(
    conn: psycopg.Connection[tuple[object, ...]], statement: str
) -> psycopg.Cursor[tuple[object, ...]]:
    """One no-transaction statement, tried again while it times out waiting for a lock or
    loses a deadlock."""
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            return conn.execute(statement.encode())
        except _LOCK_ERRORS:
            if attempt == LOCK_RETRIES:
                raise
            first = next(line for line in statement.splitlines() if not line.startswith("--"))
            logger.info("could not take the locks of %r; trying again", first[:80])
            time.sleep(LOCK_RETRY_PAUSE_S)
    raise AssertionError("unreachable")
