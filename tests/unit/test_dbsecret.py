"""The connection string built from an RDS-style Secrets Manager secret."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from edgemart.dbsecret import DatabaseSecretError, conninfo_from_secret

RDS = {
    "username": "app",
    "password": "p@ss word'",
    "engine": "postgres",
    "host": "db.cluster.example",
    "port": 5432,
    "dbname": "shop",
}


def test_rds_secret_becomes_a_quoted_conninfo() -> None:
    assert conninfo_to_dict(conninfo_from_secret(RDS)) == {
        "user": "app",
        "password": "p@ss word'",
        "host": "db.cluster.example",
        "port": "5432",
        "dbname": "shop",
    }


def test_proxy_host_and_dbname_override_the_secret() -> None:
    params = conninfo_to_dict(conninfo_from_secret(RDS, host="proxy.example", dbname="other"))
    assert (params["host"], params["dbname"]) == ("proxy.example", "other")


def test_a_secret_without_credentials_is_refused() -> None:
    with pytest.raises(DatabaseSecretError, match="password"):
        conninfo_from_secret({"username": "app"})
