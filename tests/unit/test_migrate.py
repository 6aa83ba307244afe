from edgemart.migrate import Migration, load_migrations


def test_migrations_are_numbered_in_order_and_unique() -> None:
    migrations = load_migrations()
    versions = [migration.version for migration in migrations]
    assert versions == sorted(versions)
    assert versions == list(range(1, len(versions) + 1))
    # Indexes of a populated database are built and dropped CONCURRENTLY, outside a transaction.
    assert [m.version for m in migrations if not m.transactional] == [6, 23, 26]


def test_no_transaction_files_split_into_statements() -> None:
    migration = Migration(
        9,
        "index",
        "-- edgemart: no-transaction\n"
        "-- a comment; with a semicolon\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a ON t (x);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS b\n    ON t (y);\n",
    )
    assert not migration.transactional
    assert migration.statements() == [
        "-- edgemart: no-transaction\n-- a comment; with a semicolon\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a ON t (x)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS b\n    ON t (y)",
    ]


def test_a_dollar_quoted_body_is_one_statement() -> None:
    migration = Migration(
        23,
        "ordered",
        "-- edgemart: no-transaction\n"
        "DO $$\nBEGIN\n    LOCK TABLE a, b;\n    ALTER TABLE b DROP c;\nEND;\n$$;\n"
        "SELECT $tag$ x; $tag$;\nCREATE INDEX CONCURRENTLY i ON t (x);\n",
    )
    assert migration.statements() == [
        "-- edgemart: no-transaction\n"
        "DO $$\nBEGIN\n    LOCK TABLE a, b;\n    ALTER TABLE b DROP c;\nEND;\n$$",
        "SELECT $tag$ x; $tag$",
        "CREATE INDEX CONCURRENTLY i ON t (x)",
    ]


def test_checksum_changes_with_the_text() -> None:
    assert Migration(1, "a", "SELECT 1").checksum != Migration(1, "a", "SELECT 2").checksum


def test_a_migration_names_the_definitions_it_needs_first() -> None:
    migration = Migration(
        9, "rank_index", "-- edgemart: requires listing_rank_score\nCREATE INDEX a ON t (x);\n"
    )
    assert migration.requires == ("listing_rank_score",)
    assert Migration(1, "a", "CREATE TABLE t (x int);").requires == ()
