"""Which databases the settings name: the replica by URL, or by host with the primary's secret."""

from __future__ import annotations

from edgemart.db import Database, replica_configured
from edgemart.dbsecret import DatabaseSecret
from edgemart.settings import Settings

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:edgemart-db"


def test_no_replica_unless_a_url_or_a_host_with_the_secret() -> None:
    assert not replica_configured(Settings())
    assert replica_configured(Settings(database_replica_url="postgresql://reader/edgemart"))
    # A host alone has no credentials to connect with.
    assert not replica_configured(Settings(database_replica_host="reader.example"))
    assert replica_configured(Settings(database_secret_arn=ARN, database_replica_host="r.example"))


def test_a_replica_host_is_reached_with_the_primary_secret() -> None:
    settings = Settings(
        database_secret_arn=ARN, database_host="proxy.example", database_replica_host="r.example"
    )
    replica = Database.replica_from(settings)
    assert replica.name == "replica"
    assert isinstance(replica.conninfo, DatabaseSecret)
    assert (replica.conninfo.arn, replica.conninfo.host) == (ARN, "r.example")
    primary = Database.primary_from(settings)
    assert isinstance(primary.conninfo, DatabaseSecret)
    assert primary.conninfo.host == "proxy.example"


def test_a_replica_url_wins_over_the_host() -> None:
    settings = Settings(
        database_secret_arn=ARN,
        database_replica_url="postgresql://reader/edgemart",
        database_replica_host="r.example",
    )
    assert Database.replica_from(settings).conninfo == "postgresql://reader/edgemart"
