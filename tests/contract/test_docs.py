"""The project's own documentation: README.md stays a short first read, its commands are the
ones CI runs and the package provides, every relative link in README.md and docs/ leads to a
file of the repository (and to a heading, when it names one), and no file cites a
specification the repository does not contain."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 150
DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
# What the README must lead a newcomer to.
README_MUST_LINK = (
    "docs/architecture.md",
    "docs/operations.md",
    "docs/configuration.md",
    "docs/decisions/README.md",
    "docs/scoring.md",
    "bench/README.md",
)
# Spelled in pieces, so that this file does not cite them itself.
FOREIGN_REFERENCES = ("../" + "shared", "API" + ".md", "DESIGN" + ".md")

_FENCED_BLOCK = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where links are links."""
    return _CODE_SPAN.sub("", _FENCED_BLOCK.sub("", markdown))


def link_targets(markdown: str) -> list[str]:
    text = prose(markdown)
    return [*_INLINE_LINK.findall(text), *_REFERENCE_LINK.findall(text)]


def is_relative(target: str) -> bool:
    return not (_SCHEME.match(target) or target.startswith(("#", "//")))


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces as
    hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    headings = _HEADING.findall(_FENCED_BLOCK.sub("", markdown))
    return {heading_anchor(heading) for heading in headings}


def relative_links() -> list[tuple[Path, str]]:
    """Each document's relative links, each target once."""
    return [
        (document, target)
        for document in DOCUMENTS
        for target in dict.fromkeys(link_targets(document.read_text(encoding="utf-8")))
        if is_relative(target)
    ]


def link_id(link: tuple[Path, str]) -> str:
    document, target = link
    return f"{document.relative_to(ROOT)} -> {target}"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_every_guide() -> None:
    linked = {
        (README.parent / target.split("#", 1)[0]).resolve()
        for target in link_targets(README.read_text(encoding="utf-8"))
        if is_relative(target)
    }
    missing = [path for path in README_MUST_LINK if (ROOT / path).resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("link", relative_links(), ids=link_id)
def test_relative_link_resolves(link: tuple[Path, str]) -> None:
    document, target = link
    path_part, _, anchor = target.partition("#")
    resolved = (document.parent / path_part.split("?", 1)[0]).resolve()
    assert resolved.is_relative_to(ROOT), f"{target} leaves the repository"
    assert resolved.exists(), f"{target} does not exist"
    if anchor and resolved.suffix == ".md":
        known = anchors(resolved.read_text(encoding="utf-8"))
        assert anchor in known, f"{resolved.relative_to(ROOT)} has no heading #{anchor}"


def test_link_checks_see_every_kind_of_link() -> None:
    """The extraction itself: inline and reference links count, code does not."""
    markdown = (
        "See [a](docs/a.md#part) and ![b](b.png).\n"
        "[c]: ../c.md\n"
        "`[d](d.md)` and\n```\n[e](e.md)\n```\n"
        "[web](https://example.com) [here](#top)\n"
    )
    targets = link_targets(markdown)
    assert sorted(targets) == ["#top", "../c.md", "b.png", "docs/a.md#part", "https://example.com"]
    assert [t for t in targets if is_relative(t)] == ["docs/a.md#part", "b.png", "../c.md"]
    assert heading_anchor("0013 Retries: `hand-written` (why)") == "0013-retries-hand-written-why"


def readme_command(containing: str) -> str:
    """The README's fenced shell command that mentions `containing`."""
    blocks: list[str] = re.findall(
        r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M
    )
    commands = [block.strip() for block in blocks if containing in block]
    assert len(commands) == 1, f"README.md should hold one command with {containing!r}"
    return commands[0]


def test_readme_test_command_is_what_ci_runs() -> None:
    """.ci/run runs the README's test command, split so that lint and type checks run between
    install and tests; it may only add `--quiet`."""
    ci_lines = {
        line.strip().replace(" --quiet", "")
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    }
    steps = readme_command(".venv/bin/pytest").split(" && ")
    assert steps[-1] == ".venv/bin/pytest"
    missing = [step for step in steps if step not in ci_lines]
    assert not missing, f".ci/run does not run {missing}"


def test_readme_commands_name_real_extras_and_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for containing in (".venv/bin/pytest", "edgemart serve"):
        command = readme_command(containing)
        for extra in re.findall(r"-e '\.\[(\w+)\]'", command):
            assert extra in project["optional-dependencies"], (command, extra)
    assert "edgemart" in project["scripts"]


def ignored_names() -> list[str]:
    """.git and the directory patterns of .gitignore: what a clone of the project lacks."""
    patterns = [".git"]
    for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line.rstrip("/"))
    return patterns


def repository_files() -> Iterator[Path]:
    patterns = ignored_names()

    def ignored(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)

    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if not ignored(name)]
        for name in files:
            if not ignored(name):
                yield Path(folder) / name


def test_repository_files_skip_what_a_clone_lacks() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in repository_files()}
    assert {"README.md", "tests/contract/test_docs.py", "template.yaml"} <= files
    assert not any(part in (".git", ".venv") for path in files for part in path.split("/"))


def test_nothing_cites_a_spec_the_project_lacks() -> None:
    citing = sorted(
        f"{path.relative_to(ROOT)}: {reference}"
        for path in repository_files()
        for reference in FOREIGN_REFERENCES
        if reference.encode() in path.read_bytes()
    )
    assert not citing, "the project must stand on its own:\n" + "\n".join(citing)
