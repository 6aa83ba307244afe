"""The layer's requirements.txt and pyproject's runtime dependencies are one list."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_layer_requirements_match_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "layers/edgemart/requirements.txt").read_text().splitlines()
    layer = [line for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(layer) == sorted(project)


def test_every_function_folder_has_a_handler_module() -> None:
    folders = [p for p in (ROOT / "functions").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert folders
    for folder in folders:
        assert "\nhandler = " in (folder / "app.py").read_text(), folder.name


def test_every_package_folder_is_listed_for_setuptools() -> None:
    """A package missing from [tool.setuptools] installs fine editable and breaks in a wheel."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    roots = {
        "edgemart": ROOT / "layers/edgemart/edgemart",
        "functions": ROOT / "functions",
        "gateway": ROOT / "gateway",
    }
    found = set()
    for name, root in roots.items():
        for folder in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
            if folder.name == "__pycache__":
                continue
            if any(folder.glob("*.py")) or any(folder.glob("*.sql")):
                relative = folder.relative_to(root).parts
                found.add(".".join((name, *relative)))
    assert found == listed


def test_every_folder_of_sql_files_ships_them_as_package_data() -> None:
    """Migrations and definitions are read at run time from the installed package."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    layer = ROOT / "layers/edgemart/edgemart"
    folders = {p.parent for p in layer.rglob("*.sql")}
    assert {f.name for f in folders} == {"migrations", "sql"}
    for folder in folders:
        package = ".".join(("edgemart", *folder.relative_to(layer).parts))
        assert "*.sql" in package_data.get(package, []), package
