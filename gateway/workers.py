"""What `edgemart serve` hands the gateway's worker processes, and what each one builds.

`serve` binds the port, starts the embedded database, migrates and seeds in its own process,
once; then uvicorn runs the app in `--workers` processes (spawned, each restarted by uvicorn's
supervisor if it dies) that share the listening socket. Each worker builds its app with the
import-string factory `gateway.workers:worker_gateway` from its environment, which `serve`
prepares with `worker_environment`: the settings it resolved itself (the embedded database's
URL, the development JWT secret, one cursor secret for all, the access-log rate, the data
folder), exported under their declared variable names, and the run folder.

The run folder is a temporary folder per `serve` (removed when it stops, or by the next
`serve` when it was killed), shared by its workers: `metrics/`, where each worker leaves its
metrics for the others' `/metrics` (gateway.workermetrics). With one worker nothing changes
but who builds the app.

Which process runs the scheduled jobs and the SQS poller is not decided here: every worker,
of this `serve` and of any other on the same database, takes part in one election through
the database's `scheduler` lease (gateway.scheduler, gateway.leadership), so a fleet runs
them once, and the heartbeat runs in every worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from starlette.applications import Starlette

from edgemart.errors import EdgemartError
from edgemart.services import Services
from edgemart.settings import DECLARED, Settings
from gateway.embedded import process_is_alive

WORKER_APP = "gateway.workers:worker_gateway"
RUN_FOLDER_VARIABLE = "EDGEMART_SERVE_RUN_DIR"
METRICS_FOLDER = "metrics"
RUN_FOLDER_PREFIX = "edgemart-serve-"

RESOLVED_BY_SERVE = (
    "database_url",
    "jwt_secret",
    "cursor_secret",
    "access_log_sample_rate",
    "data_dir",
)
"""The settings `serve` may set itself rather than read from the environment."""


class WorkerEnvironmentError(EdgemartError):
    """A worker was started without what `serve` prepares, or would see other settings."""


def worker_environment(settings: Settings, run_folder: Path) -> dict[str, str]:
    """The variables a worker needs, beyond the environment `serve` was started with, to read
    `settings` with `Settings.from_env()`."""
    by_name = {declared.name: declared for declared in DECLARED}
    environment = {RUN_FOLDER_VARIABLE: str(run_folder)}
    for name in RESOLVED_BY_SERVE:
        value = getattr(settings, name)
        if value is not None:
            environment[by_name[name].variable] = str(value)
    return environment


def check_worker_settings(settings: Settings, environ: Mapping[str, str]) -> None:
    """A worker reading `environ` must get exactly `settings`; an error names what differs."""
    seen = Settings.from_env(environ)
    differ = [
        declared.variable
        for declared in DECLARED
        if getattr(seen, declared.name) != getattr(settings, declared.name)
    ]
    if differ:
        raise WorkerEnvironmentError(
            f"the gateway's workers would read other settings than serve's: {differ}"
        )


@contextmanager
def run_folder() -> Iterator[Path]:
    """A new, private run folder, removed when the block ends. Folders a killed `serve` left
    behind (named by its pid, which no longer runs) are removed first."""
    remove_abandoned_run_folders(Path(tempfile.gettempdir()))
    path = Path(tempfile.mkdtemp(prefix=f"{RUN_FOLDER_PREFIX}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_abandoned_run_folders(parent: Path) -> None:
    for folder in parent.glob(RUN_FOLDER_PREFIX + "*"):
        pid = folder.name.removeprefix(RUN_FOLDER_PREFIX).partition("-")[0]
        try:
            ours = folder.is_dir() and folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if ours and pid.isdigit() and not process_is_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def worker_gateway() -> Starlette:
    """The app of one worker (uvicorn's factory, called in the worker process)."""
    folder = os.environ.get(RUN_FOLDER_VARIABLE)
    if not folder:
        raise WorkerEnvironmentError(
            f"{WORKER_APP} builds the app of an `edgemart serve` worker: {RUN_FOLDER_VARIABLE} "
            "is not set (run `edgemart serve`)"
        )
    from gateway.app import create_gateway

    return create_gateway(
        Services.from_settings(Settings.from_env()),
        run_schedules=True,
        metrics_folder=Path(folder) / METRICS_FOLDER,
    )
