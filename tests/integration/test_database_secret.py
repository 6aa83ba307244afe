"""Database credentials from Secrets Manager (moto) against a PostgreSQL of the test's own that
checks passwords: connect with the secret, then rotate the password and see the pool fetch the
new one after the server refuses the cached one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from edgemart.services import Services
from tests.conftest import settings_for, start_embedded_postgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def password_postgres(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A PostgreSQL where role `app` must give its password (the admin keeps trust)."""
    server: Any = start_embedded_postgres(tmp_path / "pg")
    admin = str(server.get_uri())
    with psycopg.connect(admin, autocommit=True) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        hba = Path(data_dir) / "pg_hba.conf"
        hba.write_text(
            "local all app scram-sha-256\nhost all app all scram-sha-256\n" + hba.read_text()
        )
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CREATE ROLE app LOGIN PASSWORD 'first-password'")
    try:
        yield {"admin": admin, "params": conninfo_to_dict(admin)}
    finally:
        server.cleanup()


@pytest.fixture
def secrets(aws: None) -> Iterator[Any]:
    import boto3
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    parameters.clear_caches()
    DEFAULT_PROVIDERS.clear()  # a provider made outside the mock would be real
    yield boto3.client("secretsmanager", region_name="us-east-1")
    DEFAULT_PROVIDERS.clear()


def rds_secret(params: dict[str, Any], password: str) -> str:
    return json.dumps(
        {
            "username": "app",
            "password": password,
            "host": params["host"],
            "port": int(params.get("port") or 5432),
            "dbname": params.get("dbname", "postgres"),
            "engine": "postgres",
        }
    )


async def test_credentials_come_from_the_secret_and_follow_a_rotation(
    password_postgres: dict[str, Any], secrets: Any
) -> None:
    params = password_postgres["params"]
    arn = secrets.create_secret(
        Name="edgemart/db", SecretString=rds_secret(params, "first-password")
    )["ARN"]
    services = Services.from_settings(
        settings_for(None, database_secret_arn=arn, database_secret_max_age_s=3600)
    )
    try:
        async with services.primary.connection() as conn:
            row = await (await conn.execute("SELECT current_user AS who")).fetchone()
        assert row == {"who": "app"}

        # Rotation: new password in the database and the secret; old sessions end.
        with psycopg.connect(password_postgres["admin"], autocommit=True) as admin:
            admin.execute("ALTER ROLE app PASSWORD 'second-password'")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'"
            )
        secrets.put_secret_value(SecretId=arn, SecretString=rds_secret(params, "second-password"))

        # The cached secret (max age an hour) is refused once; the pool's next attempt
        # fetches the rotated one.
        row = None
        for _ in range(3):  # the terminated session may be handed out first and fail
            try:
                async with services.primary.connection(timeout_s=5) as conn:
                    row = await (await conn.execute("SELECT current_user AS who")).fetchone()
                break
            except psycopg.OperationalError:
                continue
        assert row == {"who": "app"}
    finally:
        await services.aclose()


async def test_an_unreadable_secret_is_a_clear_error(secrets: Any) -> None:
    from edgemart.dbsecret import DatabaseSecret, DatabaseSecretError

    secret = DatabaseSecret("arn:aws:secretsmanager:us-east-1:123456789012:secret:missing")
    with pytest.raises(DatabaseSecretError, match="cannot read database secret"):
        secret.fetch()
