"""Definition files against a real PostgreSQL: a changed file is applied again, and only it; what
CREATE OR REPLACE cannot do (views, triggers, signatures, removed files, indexed results) is
done or refused loudly, never left behind. Each test edits a copy of the layer's sql/."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import edgemart
from edgemart.definitions import DefinitionError
from edgemart.migrate import Migration, apply_migrations, load_migrations

SQL_DIR = Path(edgemart.__file__).parent / "sql"
NEXT_VERSION = load_migrations()[-1].version + 1
"""The version of a migration a test adds after the layer's own."""


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SQL_DIR, tmp_path / "sql"))


@pytest.fixture
def url(migrated_database_url: str) -> Iterator[str]:
    yield migrated_database_url


def edit(sql_dir: Path, name: str, old: str, new: str) -> None:
    path = sql_dir / f"{name}.sql"
    text = path.read_text(encoding="utf-8")
    assert old in text, (name, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


def one(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


def records(url: str) -> dict[str, tuple[str, object]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, checksum, applied_at FROM schema_definitions").fetchall()
    return {name: (checksum, applied_at) for name, checksum, applied_at in rows}


PROBE = "CREATE OR REPLACE FUNCTION probe_fn({args}) RETURNS integer\n"
PROBE += "LANGUAGE sql IMMUTABLE RETURN {body};\n"


def write_probe(sql_dir: Path, args: str = "a integer", body: str = "a + 1") -> None:
    (sql_dir / "probe_fn.sql").write_text(PROBE.format(args=args, body=body), encoding="utf-8")


def test_an_edited_file_is_applied_again_and_only_it(url: str, sql_dir: Path) -> None:
    assert one(url, "SELECT platform_fee(15, 1000)") == 2
    before = records(url)
    edit(sql_dir, "platform_fee", "(total * bps + 5000) / 10000", "(total * bps) / 10000")
    run = apply_migrations(url, definitions=sql_dir)
    assert run.migrations == [] and [d.name for d in run.definitions] == ["platform_fee"]
    assert one(url, "SELECT platform_fee(15, 1000)") == 1
    after = records(url)
    assert after["platform_fee"] != before["platform_fee"]
    assert {k: v for k, v in after.items() if k != "platform_fee"} == {
        k: v for k, v in before.items() if k != "platform_fee"
    }
    assert apply_migrations(url, definitions=sql_dir).definitions == []


PROBE_VIEW = (
    "CREATE MATERIALIZED VIEW probe_view AS\n"
    "SELECT c.id, count(p.id) AS product_count FROM categories c\n"
    "LEFT JOIN products p ON p.category_id = c.id GROUP BY c.id;\n"
    "CREATE UNIQUE INDEX probe_view_id_idx ON probe_view (id);\n"
)


def write_probe_view(sql_dir: Path) -> None:
    """A materialized view of the test's own (the layer's home lists are tables)."""
    (sql_dir / "probe_view.sql").write_text(PROBE_VIEW, encoding="utf-8")


def test_a_definition_a_migration_dropped_is_created_again(url: str, sql_dir: Path) -> None:
    """A migration that must change what a view uses drops the view; the unchanged file then
    creates it again on the same run."""
    write_probe_view(sql_dir)
    apply_migrations(url, definitions=sql_dir)
    dropping = Migration(NEXT_VERSION, "drop_view", "DROP MATERIALIZED VIEW probe_view;\n")
    run = apply_migrations(url, [*load_migrations(), dropping], definitions=sql_dir)
    assert [d.name for d in run.definitions] == ["probe_view"]
    index = one(url, "SELECT to_regclass('probe_view_id_idx')::text")
    assert index == "probe_view_id_idx"


def test_a_materialized_view_is_created_again_with_its_indexes(url: str, sql_dir: Path) -> None:
    write_probe_view(sql_dir)
    apply_migrations(url, definitions=sql_dir)
    edit(
        sql_dir,
        "probe_view",
        "count(p.id) AS product_count",
        "count(p.id) AS product_count, max(p.price_cents) AS max_price_cents",
    )
    apply_migrations(url, definitions=sql_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY probe_view")  # unique index
        columns = conn.execute("SELECT * FROM probe_view LIMIT 0").description
    assert columns is not None and "max_price_cents" in [c.name for c in columns]


def test_a_trigger_taken_out_of_its_file_is_dropped(url: str, sql_dir: Path) -> None:
    path = sql_dir / "search_terms_change.sql"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("CREATE TRIGGER search_terms_delete")], encoding="utf-8")
    apply_migrations(url, definitions=sql_dir)
    triggers = "SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger"
    triggers += " WHERE tgrelid = 'products'::regclass AND NOT tgisinternal"
    kept = ["search_terms_insert", "search_terms_truncate", "search_terms_update"]
    assert one(url, triggers) == kept


def test_a_new_signature_leaves_no_old_function_behind(url: str, sql_dir: Path) -> None:
    write_probe(sql_dir)
    assert [d.name for d in apply_migrations(url, definitions=sql_dir).definitions] == ["probe_fn"]
    write_probe(sql_dir, "a integer, b integer", "a + b")
    apply_migrations(url, definitions=sql_dir)
    signatures = "SELECT array_agg(oid::regprocedure::text) FROM pg_proc WHERE proname = 'probe_fn'"
    assert one(url, signatures) == ["probe_fn(integer,integer)"]


def test_a_removed_file_drops_its_object(url: str, sql_dir: Path) -> None:
    write_probe(sql_dir)
    apply_migrations(url, definitions=sql_dir)
    (sql_dir / "probe_fn.sql").unlink()
    apply_migrations(url, definitions=sql_dir)
    assert one(url, "SELECT count(*) FROM pg_proc WHERE proname = 'probe_fn'") == 0
    assert "probe_fn" not in records(url)


def test_a_removed_file_whose_object_is_in_use_is_refused(url: str, sql_dir: Path) -> None:
    write_probe(sql_dir)
    apply_migrations(url, definitions=sql_dir)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE probe_t (x integer)")
        conn.execute("CREATE INDEX probe_t_idx ON probe_t (probe_fn(x))")
    (sql_dir / "probe_fn.sql").unlink()
    with pytest.raises(DefinitionError, match="index probe_t_idx depends on function probe_fn"):
        apply_migrations(url, definitions=sql_dir)
    assert "probe_fn" in records(url)


def test_a_function_whose_results_an_index_holds_changes_only_with_a_reindex(
    url: str, sql_dir: Path
) -> None:
    """products_top_rated_idx holds listing_rank_score's results; CREATE OR REPLACE would
    leave them as the old body computed them."""
    edit(sql_dir, "listing_rank_score", "quality_score, 50)", "quality_score, 40)")
    with pytest.raises(DefinitionError, match="index products_top_rated_idx holds results"):
        apply_migrations(url, definitions=sql_dir)
    assert one(url, "SELECT listing_rank_score(NULL)") == 50
    reindex = Migration(
        NEXT_VERSION,
        "rerank",
        "-- edgemart: requires listing_rank_score\nREINDEX INDEX products_top_rated_idx;\n",
    )
    run = apply_migrations(url, [*load_migrations(), reindex], sql_dir)
    assert run.migrations == [reindex]
    assert [d.name for d in run.definitions] == ["listing_rank_score"]
    assert one(url, "SELECT listing_rank_score(NULL)") == 40


def test_one_failing_file_applies_none_of_the_run(url: str, sql_dir: Path) -> None:
    """All files of a run are one transaction: the platform fee is not changed by a run in
    which another file fails (here CREATE OR REPLACE cannot change a return type)."""
    write_probe(sql_dir)
    apply_migrations(url, definitions=sql_dir)
    before = records(url)
    edit(sql_dir, "platform_fee", "(total * bps + 5000) / 10000", "(total * bps) / 10000")
    (sql_dir / "probe_fn.sql").write_text(
        PROBE.format(args="a integer", body="a + 1").replace("RETURNS integer", "RETURNS bigint"),
        encoding="utf-8",
    )
    with pytest.raises(psycopg.errors.InvalidFunctionDefinition):
        apply_migrations(url, definitions=sql_dir)
    assert one(url, "SELECT platform_fee(15, 1000)") == 2
    assert records(url) == before


def test_a_file_must_create_the_object_it_is_named_after(url: str, sql_dir: Path) -> None:
    (sql_dir / "probe_fn.sql").write_text(
        "CREATE OR REPLACE FUNCTION probe_other() RETURNS integer LANGUAGE sql RETURN 1;\n",
        encoding="utf-8",
    )
    with pytest.raises(DefinitionError, match="creates no function or view named probe_fn"):
        apply_migrations(url, definitions=sql_dir)
    assert one(url, "SELECT count(*) FROM pg_proc WHERE proname = 'probe_other'") == 0
