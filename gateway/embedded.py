"""Embedded defaults for local use: a real PostgreSQL 16 from the `pgserver` wheel and a
development JWT secret, both kept in the data folder (`EDGEMART_DATA_DIR`)."""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import psycopg

from edgemart.logging import logger

EMBEDDED_DATABASE = "edgemart"


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, listening on a Unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; returns the `edgemart` database's URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from pgserver import get_server  # type: ignore[attr-defined]

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        admin_url: str = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE]
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
        url: str = self._server.get_uri(EMBEDDED_DATABASE)
        logger.info("embedded PostgreSQL running in %s", self.pgdata)
        return url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
            logger.info("embedded PostgreSQL stopped")


def development_jwt_secret(data_dir: Path) -> str:
    """The HS256 secret for local development, created once per data folder.

    Used only when neither JWT_SECRET nor JWT_JWKS_URL is set; `edgemart serve` logs that it
    does so, and `edgemart token` signs with the same secret.
    """
    path = data_dir / "jwt-secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    return secret
