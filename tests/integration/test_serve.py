"""`edgemart serve` as a user runs it: a real process on the embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import run_cli, unused_port


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def wait_for_health(url: str, process: subprocess.Popen[bytes], deadline_s: float) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early with {process.returncode}")
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("gateway did not come up")


def test_serve_on_embedded_postgres_then_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
    env["EDGEMART_DATA_DIR"] = str(data_dir)
    port = unused_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for_health(f"http://127.0.0.1:{port}/health", process, 120) == 200
        live = httpx.get(f"http://127.0.0.1:{port}/health/live")
        assert live.json() == {"status": "ok"}
        assert processes_mentioning(str(data_dir / "postgres"))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = output.decode()
    assert process.returncode == 0, log
    assert "demo catalog loaded: 24 categories, 50 stores, 5000 products" in log
    assert "embedded PostgreSQL stopped" in log
    deadline = time.monotonic() + 10
    while processes_mentioning(str(data_dir / "postgres")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(data_dir / "postgres")) == []


def test_cli_commands_have_help() -> None:
    for command in ("serve", "migrate", "seed", "token"):
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: edgemart " + command in result.stdout


def test_migrate_without_database_url_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = run_cli("migrate", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "edgemart: DATABASE_URL is not set"
