"""Migrations against a real PostgreSQL: idempotent, safe concurrently (directly and through
PgBouncer in transaction mode), constraints hold, and a database migrated step by step ends as
one migrated at once."""

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from edgemart.definitions import DefinitionError, load_definitions, with_requirements
from edgemart.migrate import (
    MIGRATION_LOCK_KEY,
    OLD_CHAIN_MESSAGE,
    Migration,
    MigrationError,
    MigrationLock,
    apply_migrations,
    load_migrations,
    pending_migrations,
)
from tests.conftest import throwaway_database


def test_apply_twice_applies_everything_once(fresh_database_url: str) -> None:
    first = apply_migrations(fresh_database_url)
    second = apply_migrations(fresh_database_url)
    assert [m.version for m in first.migrations] == [m.version for m in load_migrations()]
    assert sorted(d.name for d in first.definitions) == sorted(d.name for d in load_definitions())
    assert second.migrations == [] and second.definitions == []


@pytest.fixture(params=["direct", "pgbouncer"])
def via(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """How runners reach the database: directly, or through PgBouncer in transaction mode,
    where each transaction may run on another server connection."""
    if request.param == "direct":
        return lambda url: url
    url: Callable[[str], str] = request.getfixturevalue("pgbouncer").url
    return url


def fail_lock_waits_after_30_s(url: str) -> None:
    """A lock wait in this database's new sessions fails after 30 s: should an index build
    wait for a runner's lock transaction again (a deadlock), the run fails instead of hanging
    the suite."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '30s'".encode())


def test_concurrent_runners_apply_each_migration_exactly_once(
    fresh_database_url: str, via: Callable[[str], str]
) -> None:
    fail_lock_waits_after_30_s(fresh_database_url)
    url = via(fresh_database_url)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: apply_migrations(url), range(6)))
    applied = sorted(m.version for result in results for m in result.migrations)
    assert applied == [m.version for m in load_migrations()]
    defined = sorted(d.name for result in results for d in result.definitions)
    assert defined == sorted(d.name for d in load_definitions())
    with psycopg.connect(fresh_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        definitions = conn.execute("SELECT count(*) FROM schema_definitions").fetchone()
        advisory = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ).fetchone()
    assert count == (len(load_migrations()),)
    assert definitions == (len(load_definitions()),)
    assert advisory == (0,)  # every run released its lock


def test_a_held_lock_keeps_other_runners_out(
    fresh_database_url: str, via: Callable[[str], str]
) -> None:
    """A runner waits for the lock's holder, and gives up after `lock_timeout_s` having
    applied nothing; once the lock is released, a run applies everything."""
    url = via(fresh_database_url)
    with MigrationLock.held(url, timeout_s=1.0):
        with pytest.raises(MigrationError, match="another migration run held the lock"):
            apply_migrations(url, lock_timeout_s=0.3)
        assert pending_migrations(url) == load_migrations()
    assert apply_migrations(url, lock_timeout_s=1.0).migrations == load_migrations()


def wait_for_rows(url: str, statement: str) -> list[tuple[object, ...]]:
    """The statement's rows once it returns any, polled for up to 10 s; [] if it never does."""
    for _ in range(500):
        with psycopg.connect(url, autocommit=True) as conn:
            if rows := conn.execute(statement.encode()).fetchall():
                return rows
        time.sleep(0.02)
    return []


# Backends of the current database holding (granted) or waiting for an advisory lock on a key;
# pg_locks shows a bigint key as its high (classid) and low (objid) halves.
ADVISORY_HOLDERS = """
SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.granted = {granted}
  AND (l.classid::bigint << 32 | l.objid::bigint) = {key}
"""


def test_a_runner_that_loses_its_lock_stops_before_the_next_migration(
    migrated_database_url: str, via: Callable[[str], str]
) -> None:
    """The lock is a transaction of the runner's own: when its connection is killed (here
    while a migration runs), the lock is gone and another run may start, so the runner ends
    with an error before its next migration rather than run it beside the other."""
    url = migrated_database_url
    gate = Migration(998, "gate", "SELECT pg_advisory_xact_lock(36)")  # waits for the test
    after = Migration(999, "after_gate", "CREATE TABLE after_gate (id int)")
    with psycopg.connect(url) as holder, ThreadPoolExecutor(max_workers=1) as pool:
        holder.execute("SELECT pg_advisory_xact_lock(36)")
        run = pool.submit(apply_migrations, via(url), [*load_migrations(), gate, after])
        assert wait_for_rows(url, ADVISORY_HOLDERS.format(granted="false", key=36))
        lock_holder = wait_for_rows(
            url, ADVISORY_HOLDERS.format(granted="true", key=MIGRATION_LOCK_KEY)
        )
        assert len(lock_holder) == 1
        holder.execute("SELECT pg_terminate_backend(%s)", [lock_holder[0][0]])
        holder.commit()  # the gate opens: migration 998 completes
        with pytest.raises(MigrationError, match="lost the migration lock"):
            run.result(timeout=60)
    with psycopg.connect(url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        table = conn.execute("SELECT to_regclass('after_gate')").fetchone()
    assert 998 in versions and 999 not in versions and table == (None,)


def test_an_applied_migration_edited_later_is_refused(migrated_database_url: str) -> None:
    migrations = load_migrations()
    edited = [Migration(1, migrations[0].name, migrations[0].sql + "\n-- edit")]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(migrated_database_url, edited)


def test_no_transaction_migration_runs_create_index_concurrently(
    migrated_database_url: str, via: Callable[[str], str]
) -> None:
    """Outside a transaction, while the runner's lock transaction stays open: the index build
    does not wait for it (it holds no snapshot between statements)."""
    extra = Migration(
        999,
        "concurrent_index",
        "-- edgemart: no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS products_view_count_idx "
        "ON products (view_count);\n",
    )
    fail_lock_waits_after_30_s(migrated_database_url)
    run = apply_migrations(via(migrated_database_url), [*load_migrations(), extra])
    assert run.migrations == [extra] and run.definitions == []
    with psycopg.connect(migrated_database_url) as conn:
        found = conn.execute("SELECT to_regclass('products_view_count_idx')").fetchone()
    assert found == ("products_view_count_idx",)


def schema_dump(url: str) -> str:
    """`pg_dump --schema-only` without its comments, settings and session keys."""
    candidates = [shutil.which("pg_dump")]
    if not os.environ.get("DATABASE_URL"):  # the embedded server: its own pg_dump
        import pgserver

        candidates.insert(0, str(Path(pgserver.__file__).parent / "pginstall/bin/pg_dump"))
    pg_dump = next((c for c in candidates if c and Path(c).exists()), None)
    assert pg_dump, "pg_dump not found"
    out = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "--dbname", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    noise = re.compile(r"^(--|SET |SELECT pg_catalog\.set_config|\\(un)?restrict )")
    return "\n".join(line for line in out.splitlines() if line and not noise.match(line))


def test_step_by_step_ends_identical_to_all_at_once(
    fresh_database_url: str, postgres_admin_url: str
) -> None:
    """One version at a time (each run applies the definitions that version requires), then
    the definitions: the same schema as a fresh database migrated in one run."""
    apply_migrations(fresh_database_url)
    with throwaway_database(postgres_admin_url) as stepped:
        defined: set[str] = set()
        for migration in load_migrations():
            run = apply_migrations(stepped, through=migration.version)
            assert run.migrations == [migration]
            needed = with_requirements(migration.requires, load_definitions())
            assert run.definitions == [d for d in needed if d.name not in defined]
            defined |= {d.name for d in run.definitions}
        assert apply_migrations(stepped).migrations == []
        dump = schema_dump(stepped)
        assert "CREATE FUNCTION public.purchase(" in dump and "home_products_pkey" in dump
        assert dump == schema_dump(fresh_database_url)


def test_through_stops_at_a_version_with_only_the_definitions_it_needs(
    fresh_database_url: str,
) -> None:
    run = apply_migrations(fresh_database_url, through=9)
    assert [m.version for m in run.migrations] == list(range(1, 10))
    assert [d.name for d in run.definitions] == [
        "create_idempotency_partitions",  # 0003 creates the first partitions with it
        "listing_rank_score",  # 0009 indexes its results
    ]
    # Every later one, whichever numbers exist (branches merge their migrations in any order).
    assert [m.version for m in pending_migrations(fresh_database_url)] == [
        m.version for m in load_migrations() if m.version >= 10
    ]


def make_old_chain_history(url: str) -> None:
    """The history the old migration chain left: `schema_migrations` rows, whose checksums
    no longer match, and no `schema_definitions`."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'catalog', 'old')")


def test_a_database_of_the_old_migration_chain_is_refused_in_one_line(
    fresh_database_url: str,
) -> None:
    """Before definitions moved to sql/, migrations held them: such a database cannot be
    brought to this chain in place (its functions were never recorded as definitions)."""
    make_old_chain_history(fresh_database_url)
    for attempt in (apply_migrations, pending_migrations):
        with pytest.raises(MigrationError) as refused:
            attempt(fresh_database_url)
        assert str(refused.value) == OLD_CHAIN_MESSAGE
        assert "\n" not in OLD_CHAIN_MESSAGE and "recreate it" in OLD_CHAIN_MESSAGE
    with psycopg.connect(fresh_database_url) as conn:
        untouched = conn.execute("SELECT to_regclass('schema_definitions')").fetchone()
    assert untouched == (None,)


def test_a_migration_requiring_an_unknown_definition_fails_before_anything_runs(
    fresh_database_url: str,
) -> None:
    broken = Migration(
        load_migrations()[-1].version + 1,
        "broken",
        "-- edgemart: requires no_such_function\nSELECT 1;\n",
    )
    with pytest.raises(DefinitionError, match="'no_such_function' is required but has no file"):
        apply_migrations(fresh_database_url, [*load_migrations(), broken])
    with psycopg.connect(fresh_database_url) as conn:
        nothing = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    assert nothing == (None,)


@pytest.fixture
def catalog_row(migrated_database_url: str) -> tuple[str, str]:
    with psycopg.connect(migrated_database_url) as conn:
        category = conn.execute(
            "INSERT INTO categories (slug, name) VALUES ('c1', 'C') RETURNING id"
        ).fetchone()
        store = conn.execute(
            "INSERT INTO stores (slug, name, owner_sub) VALUES ('s-1', 'S', 'seller-1') "
            "RETURNING id"
        ).fetchone()
        assert category and store
        product = conn.execute(
            "INSERT INTO products (store_id, category_id, name, price_cents, stock) "
            "VALUES (%s, %s, 'P', 100, 1) RETURNING id",
            [store[0], category[0]],
        ).fetchone()
        assert product
    return migrated_database_url, str(product[0])


def test_stock_can_never_go_negative(catalog_row: tuple[str, str]) -> None:
    url, product_id = catalog_row
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE products SET stock = stock - 2 WHERE id = %s", [product_id])


def test_wallet_balance_can_never_go_negative(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("INSERT INTO wallets (user_sub, balance_cents) VALUES ('b', 100)")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE wallets SET balance_cents = balance_cents - 101")


def test_order_total_must_equal_price_times_quantity(catalog_row: tuple[str, str]) -> None:
    url, product_id = catalog_row
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status) SELECT 'b', id, store_id, 2, 100, 150, 'completed' "
            "FROM products WHERE id = %s",
            [product_id],
        )


def test_orders_need_an_existing_product(migrated_database_url: str) -> None:
    """The key is deferred to COMMIT (migration 0011), and enforced there."""
    with (
        psycopg.connect(migrated_database_url) as conn,
        pytest.raises(psycopg.errors.ForeignKeyViolation),
    ):
        conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status) VALUES ('b', gen_random_uuid(), gen_random_uuid(), 1, 1, 1, "
            "'completed')"
        )
        conn.commit()


def test_audit_log_is_append_only(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (action, entity_type) VALUES ('x', 'y')")
        for statement in (
            "UPDATE audit_log SET action = 'z'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())


def test_idempotency_partitions_cover_today_and_the_coming_days(
    migrated_database_url: str,
) -> None:
    today = datetime.now(UTC).date()
    with psycopg.connect(migrated_database_url) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'idempotency_keys'::regclass"
            )
        }
        for offset in range(0, 7):
            assert f"idempotency_keys_{today + timedelta(days=offset):%Y%m%d}" in names
        # A row for now lands in today's partition.
        conn.execute(
            "INSERT INTO idempotency_keys (user_sub, key, expires_at, fingerprint, status) "
            "VALUES ('u', 'k', now() + interval '1 day', 'f', 'in_progress')"
        )
        partition = conn.execute("SELECT tableoid::regclass::text FROM idempotency_keys").fetchone()
    assert partition == (f"idempotency_keys_{today:%Y%m%d}",)


def test_home_lists_rebuild_per_tenant(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("SELECT refresh_home_lists('00000000-0000-0000-0000-000000000001')")
        counted = conn.execute("SELECT count(*) FROM category_counts").fetchone()
    assert counted == (0,)  # no categories yet, and nothing left over
