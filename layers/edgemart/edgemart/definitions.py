"""SQL definitions: every function, trigger function and view, one file each in `edgemart/sql`.

`sql/<name>.sql` defines the object called `<name>`: a function (`CREATE OR REPLACE
FUNCTION`), a trigger function with its `CREATE TRIGGER`s, or a view or materialized view with
its indexes. The numbered migrations change the schema only; `edgemart.migrate` applies these
files after them, all in one transaction, and again whenever a file's text changes (its
checksum is recorded in `schema_definitions`) or its object has gone (a migration dropped it).

A file names the definitions it needs with a line `-- edgemart: requires a, b`; they are
applied first, and the order is otherwise by name, so it is the same on every database. A
requirement with no file, or a cycle, is an error before anything is applied. A migration may
carry the same line: its requirements are brought up to date just before it runs (an
expression index, or a data move, that calls a function).

Applying a file goes through what a plain `CREATE OR REPLACE` cannot do:

- a view or materialized view named `<name>` is dropped first, so its file creates it (and
  its indexes) afresh: its columns may change;
- the triggers that run functions named `<name>` are dropped first, so the file's
  `CREATE TRIGGER`s are the whole set;
- a function named `<name>` the file did not (re)create is dropped afterwards: the signature
  changed, and the old one would be left behind;
- a function whose results an index, a stored generated column or a CHECK constraint holds is
  not replaced silently: `CREATE OR REPLACE` rebuilds none of them, so a changed body is
  refused unless a migration requires it (and then reindexes);
- the file must leave an object named `<name>`.

A recorded definition whose file was removed is dropped (its triggers, view and functions),
never with CASCADE: an object still in use makes that an error, not a silent leftover.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import psycopg
from psycopg import sql

from edgemart.errors import EdgemartError

REQUIRES = re.compile(r"^--[ \t]*edgemart:[ \t]*requires[ \t]+(.*)$", re.MULTILINE)
_NAME = re.compile(r"[a-z][a-z0-9_]*")

Connection = psycopg.Connection[tuple[object, ...]]


class DefinitionError(EdgemartError):
    """The definition files are inconsistent, or applying one would leave the database wrong."""


def requirements(text: str) -> tuple[str, ...]:
    """The names a file's `-- edgemart: requires` lines list, in order, without repeats."""
    names: list[str] = []
    for line in REQUIRES.findall(text):
        for name in re.split(r"[\s,]+", line.strip()):
            if name and name not in names:
                names.append(name)
    return tuple(names)


def sql_checksum(sql: str) -> str:
    """What the runner records for a migration or a definition file: a change of text is a
    change of checksum."""
    return hashlib.sha256(sql.encode()).hexdigest()


class RecordedSql:
    """SQL the database records by checksum once applied: a migration or a definition."""

    __slots__ = ()
    sql: str

    @property
    def checksum(self) -> str:
        return sql_checksum(self.sql)


@dataclass(frozen=True, slots=True)
class Definition(RecordedSql):
    name: str
    sql: str

    @property
    def requires(self) -> tuple[str, ...]:
        return requirements(self.sql)


def load_definitions(folder: Traversable | Path | None = None) -> list[Definition]:
    """The files of `folder` (the layer's `sql/` by default), in the order they are applied."""
    folder = resources.files("edgemart") / "sql" if folder is None else folder
    definitions: list[Definition] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        name = entry.name.removesuffix(".sql")
        if _NAME.fullmatch(name) is None:
            raise DefinitionError(f"definition file name {entry.name!r} is not name.sql")
        definitions.append(Definition(name, entry.read_text(encoding="utf-8")))
    return in_dependency_order(definitions)


def in_dependency_order(definitions: Iterable[Definition]) -> list[Definition]:
    """Every definition after the ones it requires, by name otherwise; loud when a
    requirement has no file or definitions require each other in a cycle."""
    by_name = {definition.name: definition for definition in definitions}
    for definition in by_name.values():
        missing = [name for name in definition.requires if name not in by_name]
        if missing:
            raise DefinitionError(
                f"sql/{definition.name}.sql requires {', '.join(missing)}, which has no file "
                "in sql/"
            )
    waiting = {name: set(d.requires) for name, d in by_name.items()}
    ready = [name for name, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    ordered: list[Definition] = []
    while ready:
        name = heapq.heappop(ready)
        ordered.append(by_name[name])
        del waiting[name]
        for other, needs in waiting.items():
            if name in needs:
                needs.discard(name)
                if not needs:
                    heapq.heappush(ready, other)
    if waiting:
        raise DefinitionError(f"definitions require each other in a cycle: {_cycle(waiting)}")
    return ordered


def _cycle(waiting: dict[str, set[str]]) -> str:
    """One cycle among definitions that are all still waiting, as `a -> b -> a`."""
    path = [min(waiting)]
    while path.count(path[-1]) < 2:
        path.append(min(waiting[path[-1]]))
    start = path.index(path[-1])
    return " -> ".join(path[start:])


def with_requirements(names: Iterable[str], ordered: list[Definition]) -> list[Definition]:
    """The definitions `names` and everything they require, in `ordered`'s order."""
    by_name = {definition.name: definition for definition in ordered}
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in by_name:
            raise DefinitionError(f"{name!r} is required but has no file in sql/")
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].requires)
    return [definition for definition in ordered if definition.name in wanted]


# --- Applying them (the caller holds the migration lock and an open transaction). ---

CREATE_DEFINITIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_definitions (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""

_NAMESPACE = "current_schema()::regnamespace"

_PRESENT = f"""
SELECT p.proname FROM pg_proc p WHERE p.pronamespace = {_NAMESPACE}
UNION
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = {_NAMESPACE} AND c.relkind IN ('v', 'm')
"""

_VIEWS = f"""
SELECT c.relkind = 'm' FROM pg_class c
WHERE c.relname = %s AND c.relnamespace = {_NAMESPACE} AND c.relkind IN ('v', 'm')
"""

_TRIGGERS = f"""
SELECT t.tgname, n.nspname, c.relname
FROM pg_trigger t
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.proname = %s AND p.pronamespace = {_NAMESPACE} AND NOT t.tgisinternal
"""

# Functions named %s, as `name(argument types)`; with `stale`, only those this transaction did
# not write (CREATE OR REPLACE rewrites a function's row, so its xmin is this transaction).
_FUNCTIONS = f"""
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.proname = %s AND p.pronamespace = {_NAMESPACE}
  AND (NOT %s OR p.xmin <> pg_current_xact_id()::xid)
"""

# What stores results of functions named %s: indexes (expressions and predicates), stored
# generated columns and CHECK constraints. Replacing the function rebuilds none of them.
_STORED_RESULTS = f"""
WITH f AS (SELECT p.oid FROM pg_proc p WHERE p.proname = %s AND p.pronamespace = {_NAMESPACE})
SELECT 'index ' || c.relname
FROM pg_depend d JOIN f ON d.refobjid = f.oid
JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
WHERE d.refclassid = 'pg_proc'::regclass AND c.relkind IN ('i', 'I')
UNION
SELECT 'generated column ' || a.attrelid::regclass || '.' || a.attname
FROM pg_depend d JOIN f ON d.refobjid = f.oid
JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
WHERE d.refclassid = 'pg_proc'::regclass AND a.attgenerated = 's'
UNION
SELECT 'constraint ' || con.conname || ' on ' || con.conrelid::regclass
FROM pg_depend d JOIN f ON d.refobjid = f.oid
JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
WHERE d.refclassid = 'pg_proc'::regclass AND con.contype = 'c'
ORDER BY 1
"""

_RECORD = """
INSERT INTO schema_definitions (name, checksum) VALUES (%s, %s)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()
"""


def recorded_definitions(conn: Connection) -> dict[str, str]:
    """Each applied definition's checksum, by name."""
    rows = conn.execute("SELECT name, checksum FROM schema_definitions").fetchall()
    return {str(name): str(checksum) for name, checksum in rows}


def present_objects(conn: Connection) -> set[str]:
    """The names of the functions, views and materialized views in the current schema."""
    return {str(name) for (name,) in conn.execute(_PRESENT).fetchall()}


def apply_definition(
    conn: Connection, definition: Definition, recorded_checksum: str | None, *, reindexed: bool
) -> None:
    """Apply one file and record it. `reindexed`: a migration requires this definition and
    reindexes what stores its results, so a changed body may replace the one they hold."""
    name = definition.name
    if recorded_checksum not in (None, definition.checksum) and not reindexed:
        stored = [str(row[0]) for row in conn.execute(_STORED_RESULTS, [name]).fetchall()]
        if stored:
            raise DefinitionError(
                f"sql/{name}.sql changed, but {', '.join(stored)} holds results of {name}(), "
                "and replacing it rebuilds none of them: add a migration with "
                f"`-- edgemart: requires {name}` that reindexes them"
            )
    _drop_views(conn, name, f"to create it again from sql/{name}.sql")
    _drop_triggers(conn, name)
    conn.execute(definition.sql.encode())
    _drop_functions(conn, name, f"that sql/{name}.sql no longer creates", stale_only=True)
    if name not in present_objects(conn):
        raise DefinitionError(f"sql/{name}.sql creates no function or view named {name}")
    conn.execute(_RECORD, [name, definition.checksum])


def drop_definition(conn: Connection, name: str) -> None:
    """Drop what a definition whose file was removed had created, and forget it."""
    why = f"whose file sql/{name}.sql was removed"
    _drop_triggers(conn, name)
    _drop_views(conn, name, why)
    _drop_functions(conn, name, why, stale_only=False)
    conn.execute("DELETE FROM schema_definitions WHERE name = %s", [name])


def _drop(conn: Connection, statement: sql.Composed, what: str, why: str) -> None:
    """Drop without CASCADE; an object still in use is an error that says what uses it."""
    try:
        conn.execute(statement)
    except psycopg.errors.DependentObjectsStillExist as exc:
        uses = exc.diag.message_detail or "other objects depend on it"
        raise DefinitionError(
            f"cannot drop {what} {why}: {' '.join(uses.split())}; change what uses it in a "
            "migration first"
        ) from None


def _drop_views(conn: Connection, name: str, why: str) -> None:
    for (materialized,) in conn.execute(_VIEWS, [name]).fetchall():
        kind = "MATERIALIZED VIEW" if materialized else "VIEW"
        statement = sql.SQL("DROP {} {}").format(sql.SQL(kind), sql.Identifier(name))
        _drop(conn, statement, f"{kind.lower()} {name}", why)


def _drop_triggers(conn: Connection, name: str) -> None:
    for trigger, schema, table in conn.execute(_TRIGGERS, [name]).fetchall():
        conn.execute(
            sql.SQL("DROP TRIGGER {} ON {}").format(
                sql.Identifier(str(trigger)), sql.Identifier(str(schema), str(table))
            )
        )


def _drop_functions(conn: Connection, name: str, why: str, *, stale_only: bool) -> None:
    for (signature,) in conn.execute(_FUNCTIONS, [name, stale_only]).fetchall():
        # A signature from pg_proc (regprocedure output), quoted where needed.
        statement = sql.SQL("DROP FUNCTION {}").format(sql.SQL(str(signature)))
        _drop(conn, statement, f"function {signature}", why)
