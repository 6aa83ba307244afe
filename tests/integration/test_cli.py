"""The `edgemart` command as a new user meets it: real child processes, real databases.

Every error is one line on stderr in edgemart's words, exit code 1 (the command could not do
its work) or 2 (the command line or configuration is wrong), and no traceback unless --debug.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import psycopg

from edgemart import __version__
from edgemart.migrate import OLD_CHAIN_MESSAGE, load_migrations
from tests.conftest import run_cli, unused_port
from tests.integration.test_migrations import make_old_chain_history
from tests.integration.test_serve import (
    embedded_postgres_cleanup,
    kill_if_running,
    log_messages,
    serve_env,
    serving,
    stop_serve,
    wait_for_health,
    wait_until_stopped,
)


def without(*names: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(overrides)
    return env


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"edgemart {__version__}\n")


def test_help_names_every_command_and_shows_defaults() -> None:
    main_help = run_cli("--help")
    assert "The `edgemart` command: serve, migrate, seed, token, edge-vcl." in main_help.stdout
    edge_help = run_cli("edge-vcl", "--help")
    assert "(default 127.0.0.1:8000)" in edge_help.stdout


def test_a_bad_backend_is_a_usage_error() -> None:
    result = run_cli("edge-vcl", "--backend", "nowhere")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "edgemart edge-vcl: error: argument --backend: must be host:port, not 'nowhere'"
    )


def test_edge_vcl_lets_the_given_purgers_ban_besides_loopback() -> None:
    result = run_cli("edge-vcl", "--purger", "10.1.0.0/16", "--purger", "192.0.2.7")
    assert result.returncode == 0, result.stderr
    acl = result.stdout[result.stdout.index("acl edge_purgers {") :].split("}", 1)[0]
    assert acl.split("\n")[1:-1] == [
        '    "127.0.0.1";',
        '    "::1";',
        '    "10.1.0.0"/16;',
        '    "192.0.2.7";',
    ]
    refused = run_cli("edge-vcl", "--purger", "gateway-host")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "edgemart edge-vcl: error: argument --purger: must be an IP address or network, "
        "not 'gateway-host'"
    )


def test_token_never_creates_a_secret_and_says_where_it_looked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "token", "--sub", "alice"],
        env=without("JWT_SECRET", "JWT_JWKS_URL", "EDGEMART_DATA_DIR"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"edgemart: no JWT secret: JWT_SECRET is not set and "
        f"{tmp_path.resolve() / '.edgemart-data' / 'jwt-secret'} does not exist; set "
        "EDGEMART_DATA_DIR (or --data-dir) to the data folder of the `edgemart serve` the "
        "token is for, or set JWT_SECRET as that server has it\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_migrate_without_a_database_anywhere_refuses_and_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "nothing-here"
    result = run_cli("migrate", env=without("DATABASE_URL", EDGEMART_DATA_DIR=str(data_dir)))
    assert result.returncode == 1
    assert result.stderr == (
        "edgemart: DATABASE_URL is not set and there is no embedded database in "
        f"{data_dir.resolve() / 'postgres'}: set EDGEMART_DATA_DIR (or --data-dir) to the data "
        "folder `edgemart serve` uses, or set DATABASE_URL\n"
    )
    assert not data_dir.exists()


def test_migrate_against_an_unreachable_server_is_one_line() -> None:
    port = unused_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/shop"
    result = run_cli("migrate", env=without(DATABASE_URL=url))
    assert result.returncode == 1
    assert result.stderr == (
        f"edgemart: cannot connect to the database shop on 127.0.0.1:{port}: is the server "
        "running, and does DATABASE_URL (or MIGRATION_DATABASE_URL) name it?\n"
    )
    debug = run_cli("migrate", "--debug", env=without(DATABASE_URL=url))
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.endswith(result.stderr)


def test_migrate_and_seed_connect_as_the_schemas_owner(fresh_database_url: str) -> None:
    """MIGRATION_DATABASE_URL is the owner's: migrate and seed use it, never DATABASE_URL (the
    application's, here a server that is not there)."""
    app_url = f"postgresql://edgemart_api@127.0.0.1:{unused_port()}/shop"
    env = without(DATABASE_URL=app_url, MIGRATION_DATABASE_URL=fresh_database_url)
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrations applied: 0001_catalog, " in migrated.stdout
    seeded = run_cli("seed", "--products", "10", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "10 products" in seeded.stdout
    assert "migrations applied: nothing to do" in run_cli("migrate", env=env).stdout


def test_seed_on_an_unmigrated_database_says_to_migrate(fresh_database_url: str) -> None:
    result = run_cli("seed", "--products", "10", env=without(DATABASE_URL=fresh_database_url))
    assert result.returncode == 1
    total = len(load_migrations())
    assert result.stderr.startswith("edgemart: the database edgemart_test_")
    assert result.stderr.endswith(
        f"is not migrated ({total} of {total} migrations pending): run `edgemart migrate` first\n"
    )
    assert len(result.stderr.splitlines()) == 1


def test_migrate_on_a_database_of_the_old_migration_chain_says_to_recreate_it(
    fresh_database_url: str,
) -> None:
    make_old_chain_history(fresh_database_url)
    for command in (("migrate",), ("seed", "--products", "10")):
        result = run_cli(*command, env=without(DATABASE_URL=fresh_database_url))
        assert result.returncode == 1
        assert result.stderr == f"edgemart: {OLD_CHAIN_MESSAGE}\n"


def test_seed_progress_in_a_log_is_plain_lines(migrated_database_url: str) -> None:
    result = run_cli("seed", "--products", "50000", env=without(DATABASE_URL=migrated_database_url))
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("products: ")]
    assert [line.split(",", 2)[0:2] for line in progress] == [
        ["products: 20", "000 / 50"],
        ["products: 40", "000 / 50"],
        ["products: 50", "000 / 50"],
    ]
    assert "(40%)" in progress[0] and "rows/s, ETA " in progress[0]
    assert "(100%)" in progress[-1] and ", done in " in progress[-1]
    assert "\r" not in result.stdout


def test_seed_progress_on_a_terminal_rewrites_one_line(migrated_database_url: str) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "seed", "--products", "50000"],
        env=without(DATABASE_URL=migrated_database_url),
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        _, errors = process.communicate(timeout=120)
    finally:
        kill_if_running(process)
        os.close(controller)
    output = b"".join(chunks).decode()
    assert process.returncode == 0, errors
    rewrites = output.split("\r")
    assert len(rewrites) >= 4  # three progress updates, each returning to the line start
    assert rewrites[1].startswith("products: 20,000 / 50,000 (40%)")
    assert "ETA " in rewrites[1]
    assert rewrites[3].startswith("products: 50,000 / 50,000 (100%)")


def test_commands_use_the_embedded_database_and_secret_of_serve(tmp_path: Path) -> None:
    """migrate, seed and token find what a running serve uses through the data folder, and
    leave its database running; with no serve, migrate starts the database and stops it."""
    data_dir = tmp_path / "data"
    port = unused_port()
    cli_env = without("DATABASE_URL", "JWT_SECRET", "JWT_JWKS_URL", "EDGEMART_DATA_DIR")
    with embedded_postgres_cleanup(data_dir) as pgdata:
        with serving(serve_env(data_dir), port, "--no-demo") as server:
            assert wait_for_health(f"http://127.0.0.1:{port}/health", server, 120) == 200
            migrated = run_cli("migrate", "--data-dir", str(data_dir), env=cli_env)
            assert migrated.returncode == 0, migrated.stderr
            assert "migrations applied: nothing to do" in migrated.stdout
            assert (
                f"embedded PostgreSQL in {pgdata} left running: still used by pid {server.pid}"
            ) in migrated.stdout
            seeded = run_cli("seed", "--products", "100", "--data-dir", str(data_dir), env=cli_env)
            assert seeded.returncode == 0, seeded.stderr
            assert "seeded 24 categories, 50 stores, 100 products, 100 buyers" in seeded.stdout
            minted = run_cli("token", "--sub", "buyer-1", "--data-dir", str(data_dir), env=cli_env)
            assert minted.returncode == 0, minted.stderr
            wallet = httpx.get(
                f"http://127.0.0.1:{port}/wallet",
                headers={"Authorization": f"Bearer {minted.stdout.strip()}"},
            )
            assert wallet.status_code == 200, wallet.text
            output, errors = stop_serve(server)
        assert server.returncode == 0, output + errors
        assert "embedded PostgreSQL stopped" in log_messages(output)
        assert wait_until_stopped(pgdata) == []

        alone = run_cli("migrate", env={**cli_env, "EDGEMART_DATA_DIR": str(data_dir)})
        assert alone.returncode == 0, alone.stderr
        assert "embedded PostgreSQL stopped" in alone.stdout
        assert wait_until_stopped(pgdata) == []


def test_token_signs_with_the_data_folders_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "jwt-secret").write_text("s" * 40 + "\n", encoding="utf-8")
    env = without("JWT_SECRET", "JWT_JWKS_URL", EDGEMART_DATA_DIR=str(data_dir))
    minted = run_cli("token", "--sub", "alice", env=env)
    assert minted.returncode == 0, minted.stderr
    assert jwt.decode(minted.stdout.strip(), "s" * 40, algorithms=["HS256"])["sub"] == "alice"


def test_seed_refuses_a_non_empty_catalog_in_one_line(migrated_database_url: str) -> None:
    env = without(DATABASE_URL=migrated_database_url)
    assert run_cli("seed", "--products", "10", env=env).returncode == 0
    again = run_cli("seed", "--products", "10", env=env)
    assert again.returncode == 1
    assert again.stderr == "edgemart: the catalog is not empty; pass --replace to reload it\n"
    with psycopg.connect(migrated_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (10,)
