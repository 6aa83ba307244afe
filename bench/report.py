"""What every benchmark result file starts with: the command, the machine and the date."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def provenance(command: str, *, setup: str = "") -> list[str]:
    """Markdown lines: `command` as run, this machine (plus `setup`, e.g. where the database
    runs) and the UTC date."""
    machine = (
        f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()}"
    )
    return [
        f"Command: `{command}`  ",
        f"Machine: {machine}{f' · {setup}' if setup else ''}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def database_command(module: str) -> str:
    """How this run was started, for a benchmark that takes its server from DATABASE_URL:
    `DATABASE_URL=... python -m <module> <arguments>` (without the prefix when unset)."""
    url = os.environ.get("DATABASE_URL")
    prefix = f"DATABASE_URL={url} " if url else ""
    return f"{prefix}python -m {module} {' '.join(sys.argv[1:])}".strip()


def publish(out: Path, lines: Iterable[str]) -> None:
    """Write the result file `out` (markdown `lines`, newline-terminated) and print it."""
    text = "\n".join(lines)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
