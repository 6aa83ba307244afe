"""`edgemart serve` as a user runs it: a real process on the embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

from gateway.embedded import database_url_for, postmaster_pid
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
            output, errors = process.communicate()
            raise AssertionError(
                f"serve exited early with {process.returncode}: {errors!r} {output[-2000:]!r}"
            )
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("gateway did not come up")


def serve_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a user with nothing configured but the data folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
    env["EDGEMART_DATA_DIR"] = str(data_dir)
    env.update(overrides)
    return env


def start_serve(env: dict[str, str], port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@contextmanager
def serving(env: dict[str, str], port: int, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`edgemart serve`, killed when the block ends if it still runs (`stop_serve` stops it
    as a process manager would)."""
    process = start_serve(env, port, *args)
    try:
        yield process
    finally:
        kill_if_running(process)


def stop_serve(process: subprocess.Popen[bytes]) -> tuple[str, str]:
    """SIGTERM, as a process manager would; returns (stdout, stderr)."""
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    return stdout.decode(), stderr.decode()


def kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


@contextmanager
def embedded_postgres_cleanup(data_dir: Path) -> Iterator[Path]:
    """Whatever a test leaves running on `data_dir`'s embedded PostgreSQL is shut down."""
    pgdata = data_dir.resolve() / "postgres"
    try:
        yield pgdata
    finally:
        pid = postmaster_pid(pgdata)
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)


def wait_until_stopped(pgdata: Path, deadline_s: float = 15) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while processes_mentioning(str(pgdata)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_mentioning(str(pgdata))


def log_messages(output: str) -> list[str]:
    return [json.loads(line)["message"] for line in output.splitlines() if line.strip()]


def test_serve_on_embedded_postgres_then_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = unused_port()
    with embedded_postgres_cleanup(data_dir) as pgdata:
        with serving(serve_env(data_dir), port) as process:
            assert wait_for_health(f"http://127.0.0.1:{port}/health", process, 120) == 200
            live = httpx.get(f"http://127.0.0.1:{port}/health/live")
            assert live.json() == {"status": "ok"}
            assert processes_mentioning(str(pgdata))
            output, errors = stop_serve(process)
        assert process.returncode == 0, output + errors
        assert "demo catalog loaded: 24 categories, 50 stores, 5000 products" in output
        assert "embedded PostgreSQL stopped" in output
        assert wait_until_stopped(pgdata) == []


def test_serve_after_a_killed_serve_owns_the_database_again(tmp_path: Path) -> None:
    """A serve killed with SIGKILL leaves its PostgreSQL running; the next serve on that data
    folder shuts the orphan down, starts its own, and stops it when it stops."""
    data_dir = tmp_path / "data"
    env = serve_env(data_dir)
    with embedded_postgres_cleanup(data_dir) as pgdata:
        first_port = unused_port()
        first = start_serve(env, first_port, "--no-demo")
        try:
            assert wait_for_health(f"http://127.0.0.1:{first_port}/health", first, 120) == 200
        finally:
            first.kill()
            first.communicate()
        orphan = postmaster_pid(pgdata)
        assert orphan is not None, "the killed serve's PostgreSQL should still run"

        second_port = unused_port()
        with serving(env, second_port, "--no-demo") as second:
            assert wait_for_health(f"http://127.0.0.1:{second_port}/health", second, 120) == 200
            own = postmaster_pid(pgdata)
            assert own is not None and own != orphan
            output, errors = stop_serve(second)
        assert second.returncode == 0, output + errors
        messages = log_messages(output)
        assert any(
            f"embedded PostgreSQL (pid {orphan})" in m and "was left running" in m for m in messages
        ), messages
        assert "embedded PostgreSQL stopped" in messages
        assert wait_until_stopped(pgdata) == []


def test_second_serve_on_a_busy_port_fails_fast_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = serve_env(data_dir)
    port = unused_port()
    with embedded_postgres_cleanup(data_dir) as pgdata:
        with serving(env, port, "--no-demo") as first:
            assert wait_for_health(f"http://127.0.0.1:{port}/health", first, 120) == 200
            database = postmaster_pid(pgdata)
            started = time.monotonic()
            second = subprocess.run(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            elapsed = time.monotonic() - started
            assert second.returncode == 1
            assert second.stderr == (
                f"edgemart: port {port} on 127.0.0.1 is already in use (another `edgemart "
                "serve`?): stop what listens there or choose another --port\n"
            )
            assert second.stdout == ""  # no database started, nothing migrated
            assert elapsed < 10
            assert postmaster_pid(pgdata) == database
            assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            output, errors = stop_serve(first)
        assert first.returncode == 0, output + errors
        assert "embedded PostgreSQL stopped" in log_messages(output)
        assert wait_until_stopped(pgdata) == []


def test_serve_logs_every_request_and_only_json(migrated_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": migrated_database_url, "JWT_SECRET": "x" * 32}
    env.pop("ACCESS_LOG_SAMPLE_RATE", None)
    port = unused_port()
    with serving(env, port, "--no-demo") as process:
        assert wait_for_health(f"http://127.0.0.1:{port}/health", process, 60) == 200
        for _ in range(5):
            assert httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200
        output, errors = stop_serve(process)
    assert process.returncode == 0, output + errors
    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    messages = [line["message"] for line in lines]
    live = [line for line in lines if line["message"] == "request" and line["status"] == 200]
    assert len(live) >= 6, lines
    assert f"gateway listening on http://127.0.0.1:{port} (Ctrl-C to stop)" in messages
    assert "Application startup complete." in messages  # uvicorn's own line, as JSON
    assert all("color_message" not in line for line in lines)
    assert errors == ""


def test_an_explicit_access_log_sample_rate_still_applies(migrated_database_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "JWT_SECRET": "x" * 32,
        "ACCESS_LOG_SAMPLE_RATE": "0",
    }
    port = unused_port()
    with serving(env, port, "--no-demo") as process:
        assert wait_for_health(f"http://127.0.0.1:{port}/health/live", process, 60) == 200
        for _ in range(5):
            httpx.get(f"http://127.0.0.1:{port}/health/live")
        output, errors = stop_serve(process)
    assert process.returncode == 0, output + errors
    assert [line for line in log_messages(output) if line == "request"] == []


def test_serve_without_the_gateway_extra_says_what_to_install(tmp_path: Path) -> None:
    """uvicorn made unimportable the way Python reports a missing package."""
    bootstrap = (
        "import sys; sys.modules['uvicorn'] = None; from gateway.cli import main; "
        "sys.exit(main(['serve']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", bootstrap],
        env=serve_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "edgemart: `edgemart serve` needs uvicorn, which is not installed: install the "
        "gateway extra (pip install 'edgemart[gateway]')\n"
    )
    assert not (tmp_path / "data").exists()


def test_cli_commands_have_help() -> None:
    for command in ("serve", "migrate", "seed", "token", "edge-vcl"):
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: edgemart " + command in result.stdout


def test_serve_runs_the_app_as_a_role_that_owns_nothing_with_demo_tenants(
    tmp_path: Path,
) -> None:
    """On the embedded PostgreSQL the migrations run as its superuser and the app as
    `edgemart_api`, a member of `edgemart_app`; --demo-tenants makes demo-1..N with their own
    catalogs once, and a restart finds them."""
    data_dir = tmp_path / "data"
    env = serve_env(data_dir)
    with embedded_postgres_cleanup(data_dir) as pgdata:
        port = unused_port()
        with serving(env, port, "--no-demo", "--demo-tenants", "2") as process:
            assert wait_for_health(f"http://127.0.0.1:{port}/health", process, 120) == 200
            token = run_cli("token", "--sub", "op", "--role", "platform_admin", env=env)
            created = httpx.post(
                f"http://127.0.0.1:{port}/platform/tenants",
                headers={"Authorization": f"Bearer {token.stdout.strip()}"},
                json={"slug": "late-shop", "name": "Late", "domains": ["late.localhost"]},
            )
            assert created.status_code == 201, created.text
            with database_url_for(None, data_dir, create=False) as owner_url:
                with psycopg.connect(owner_url) as conn:
                    users = conn.execute(
                        "SELECT DISTINCT usename FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchall()
                    member = conn.execute(
                        "SELECT pg_has_role('edgemart_api', 'edgemart_app', 'MEMBER'), "
                        "r.rolsuper, r.rolbypassrls FROM pg_roles r "
                        "WHERE r.rolname = 'edgemart_api'"
                    ).fetchone()
                    catalogs = conn.execute(
                        "SELECT t.slug, d.domain, (SELECT count(*) FROM products p "
                        "WHERE p.tenant_id = t.id) FROM tenants t JOIN tenant_domains d "
                        "ON d.tenant_id = t.id WHERE t.slug LIKE 'demo-%' ORDER BY t.slug"
                    ).fetchall()
                    audited = conn.execute(
                        "SELECT count(*) FROM audit_log WHERE action = 'tenant.create' "
                        "AND actor_sub = 'edgemart serve'"
                    ).fetchone()
            output, errors = stop_serve(process)
        assert process.returncode == 0, output + errors
        assert [row[0] for row in users] == ["edgemart_api"]
        messages = log_messages(output)
        for number in (1, 2):
            line = (
                f"demo tenant demo-{number} (made, 300 demo products loaded): "
                f"http://demo-{number}.localhost:{port}/"
            )
            assert line in messages, messages

        assert member == (True, False, False)
        assert [tuple(row) for row in catalogs] == [
            ("demo-1", "demo-1.localhost", 300),
            ("demo-2", "demo-2.localhost", 300),
        ]
        assert audited == (2,)  # the tenant made through the route was audited as `op`

        port = unused_port()
        with serving(env, port, "--no-demo", "--demo-tenants", "2") as again:
            assert wait_for_health(f"http://127.0.0.1:{port}/health", again, 120) == 200
            output, errors = stop_serve(again)
        assert again.returncode == 0, output + errors
        assert (
            f"demo tenant demo-2 (found, its catalog kept): http://demo-2.localhost:{port}/"
            in log_messages(output)
        )
        assert wait_until_stopped(pgdata) == []


def test_demo_tenants_need_multi_tenancy(tmp_path: Path) -> None:
    env = serve_env(tmp_path / "data", TENANCY="single")
    result = run_cli("serve", "--demo-tenants", "1", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "edgemart: --demo-tenants serves several marketplaces, which needs TENANCY=multi; "
        "TENANCY is 'single'\n"
    )
    assert not (tmp_path / "data").exists()
