"""The definition files: their order, their requirement lines, and the layer's own files."""

import re
from pathlib import Path

import pytest

from edgemart.definitions import (
    Definition,
    DefinitionError,
    in_dependency_order,
    load_definitions,
    requirements,
    with_requirements,
)
from edgemart.migrate import load_migrations


def names(definitions: list[Definition]) -> list[str]:
    return [definition.name for definition in definitions]


def test_requirement_lines_list_names_in_order_without_repeats() -> None:
    text = (
        "-- what it is\n"
        "-- edgemart: requires b, a\n"
        "--edgemart:requires  c a\n"
        "SELECT 1; -- edgemart: requires not_a_header_line\n"
    )
    assert requirements(text) == ("b", "a", "c")
    assert requirements("SELECT 1") == ()


def test_requirements_come_first_then_names_decide() -> None:
    files = [
        Definition("c", "-- edgemart: requires a"),
        Definition("b", ""),
        Definition("a", ""),
        Definition("d", "-- edgemart: requires c, b"),
    ]
    assert names(in_dependency_order(files)) == ["a", "b", "c", "d"]
    assert names(in_dependency_order(reversed(files))) == ["a", "b", "c", "d"]
    files = [Definition("a", "-- edgemart: requires z"), Definition("z", "")]
    assert names(in_dependency_order(files)) == ["z", "a"]


def test_a_requirement_without_a_file_is_an_error() -> None:
    files = [Definition("purchase", "-- edgemart: requires platform_fee, order_json")]
    with pytest.raises(DefinitionError, match="sql/purchase.sql requires platform_fee, order_json"):
        in_dependency_order(files)


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        ([Definition("a", "-- edgemart: requires a")], "a -> a"),
        (
            [
                Definition("a", "-- edgemart: requires b"),
                Definition("b", "-- edgemart: requires c"),
                Definition("c", "-- edgemart: requires a"),
                Definition("d", "-- edgemart: requires a"),
            ],
            "a -> b -> c -> a",
        ),
    ],
)
def test_a_cycle_is_an_error_that_names_it(files: list[Definition], cycle: str) -> None:
    with pytest.raises(DefinitionError, match=f"in a cycle: {cycle}$"):
        in_dependency_order(files)


def test_with_requirements_is_the_closure_in_apply_order() -> None:
    ordered = in_dependency_order(
        [
            Definition("a", ""),
            Definition("b", "-- edgemart: requires a"),
            Definition("c", "-- edgemart: requires b"),
            Definition("d", ""),
        ]
    )
    assert names(with_requirements(["c"], ordered)) == ["a", "b", "c"]
    assert with_requirements([], ordered) == []
    with pytest.raises(DefinitionError, match="'x' is required but has no file"):
        with_requirements(["x"], ordered)


def test_load_reads_sql_files_only_and_refuses_odd_names(tmp_path: Path) -> None:
    (tmp_path / "b.sql").write_text("-- edgemart: requires a\n", encoding="utf-8")
    (tmp_path / "a.sql").write_text("", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("", encoding="utf-8")
    assert names(load_definitions(tmp_path)) == ["a", "b"]
    (tmp_path / "Bad-Name.sql").write_text("", encoding="utf-8")
    with pytest.raises(DefinitionError, match="'Bad-Name.sql' is not name.sql"):
        load_definitions(tmp_path)


# --- The layer's files. ---

CREATES = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|(?:MATERIALIZED\s+)?VIEW|TRIGGER)\s+(\w+)",
    re.IGNORECASE,
)
TRIGGER_FUNCTION = re.compile(r"\bEXECUTE\s+FUNCTION\s+(\w+)", re.IGNORECASE)


def code(text: str) -> str:
    """`text` without its comments and string literals (where names may appear in prose)."""
    return re.sub(r"'(?:[^']|'')*'|--[^\n]*", " ", text)


def test_each_file_defines_the_object_it_is_named_after_and_nothing_else() -> None:
    for definition in load_definitions():
        text = code(definition.sql)
        created = CREATES.findall(text)
        assert created, definition.name
        for kind, name in created:
            if kind.upper() != "TRIGGER":
                assert name == definition.name, (definition.name, kind, name)
        # A file's triggers run its own function.
        assert set(TRIGGER_FUNCTION.findall(text)) <= {definition.name}, definition.name


def test_every_definition_a_file_uses_is_a_declared_requirement() -> None:
    """Only declared requirements are ordered first; SQL-language bodies, views and indexes
    are checked against what exists when they are created."""
    definitions = load_definitions()
    every_name = {definition.name for definition in definitions}
    sources = [(f"sql/{d.name}.sql", d.name, d.sql, d.requires) for d in definitions]
    sources += [(f"migration {m.version:04d}", "", m.sql, m.requires) for m in load_migrations()]
    for where, own_name, text, declared in sources:
        used = {name for name in every_name - {own_name} if re.search(rf"\b{name}\b", code(text))}
        assert used <= set(declared), f"{where} uses {sorted(used - set(declared))} undeclared"


def test_migrations_change_the_schema_only() -> None:
    for migration in load_migrations():
        assert CREATES.findall(code(migration.sql)) == [], migration.name
        assert re.search(r"\bDROP\s+FUNCTION\b", code(migration.sql), re.I) is None
