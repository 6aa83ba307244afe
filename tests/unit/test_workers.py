"""What `serve` hands its workers: the settings it resolved, read back exactly by
`Settings.from_env`, the run folder, and a factory that refuses to run without them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from edgemart.settings import Settings
from gateway.workers import (
    METRICS_FOLDER,
    RUN_FOLDER_PREFIX,
    RUN_FOLDER_VARIABLE,
    WorkerEnvironmentError,
    check_worker_settings,
    remove_abandoned_run_folders,
    run_folder,
    worker_environment,
    worker_gateway,
)

USER_ENVIRONMENT = {"REDIS_URL": "redis://127.0.0.1:6379/0", "MAX_BODY_BYTES": "1024"}


def resolved_by_serve() -> Settings:
    """Settings as serve has them after resolving its own defaults."""
    return dataclasses.replace(
        Settings.from_env(USER_ENVIRONMENT),
        database_url="postgresql://postgres@/edgemart?host=/tmp/pg",
        jwt_secret="development-secret",
        cursor_secret="one-for-every-worker",
        access_log_sample_rate=1.0,
        data_dir=Path("elsewhere/data"),
    )


def test_a_worker_reads_exactly_the_settings_serve_resolved(tmp_path: Path) -> None:
    settings = resolved_by_serve()
    environment = worker_environment(settings, tmp_path)
    assert environment == {
        RUN_FOLDER_VARIABLE: str(tmp_path),
        "DATABASE_URL": "postgresql://postgres@/edgemart?host=/tmp/pg",
        "JWT_SECRET": "development-secret",
        "CURSOR_SECRET": "one-for-every-worker",
        "ACCESS_LOG_SAMPLE_RATE": "1.0",
        "EDGEMART_DATA_DIR": "elsewhere/data",
    }
    worker_settings = Settings.from_env({**USER_ENVIRONMENT, **environment})
    assert worker_settings == settings
    check_worker_settings(settings, {**USER_ENVIRONMENT, **environment})


def test_settings_a_worker_would_not_see_are_an_error(tmp_path: Path) -> None:
    settings = dataclasses.replace(resolved_by_serve(), max_body_bytes=5)
    environment = {**USER_ENVIRONMENT, **worker_environment(settings, tmp_path)}
    with pytest.raises(WorkerEnvironmentError, match=r"\['MAX_BODY_BYTES'\]"):
        check_worker_settings(settings, environment)


def test_the_run_folder_is_private_and_removed_at_the_end() -> None:
    with run_folder() as folder:
        (folder / METRICS_FOLDER).mkdir()
        (folder / METRICS_FOLDER / "1-a.json").write_text("[]", encoding="utf-8")
        assert folder.stat().st_mode & 0o077 == 0
    assert not folder.exists()


def test_folders_of_a_killed_serve_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    abandoned = tmp_path / f"{RUN_FOLDER_PREFIX}{dead_pid}-abcd"
    live = tmp_path / f"{RUN_FOLDER_PREFIX}{os.getpid()}-efgh"
    unrelated = tmp_path / f"{RUN_FOLDER_PREFIX}notapid"
    for folder in (abandoned, live, unrelated):
        (folder / METRICS_FOLDER).mkdir(parents=True)
    remove_abandoned_run_folders(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])


def test_the_worker_factory_needs_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_FOLDER_VARIABLE, raising=False)
    with pytest.raises(WorkerEnvironmentError, match="run `edgemart serve`"):
        worker_gateway()


def test_the_worker_factory_builds_the_whole_gateway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(RUN_FOLDER_VARIABLE, str(tmp_path))
    app = worker_gateway()
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/metrics", "/docs", "/health/live"} <= paths
