"""Database credentials from AWS Secrets Manager (`DATABASE_SECRET_ARN`).

The secret is the JSON RDS writes for a managed database (`username`, `password`, `host`,
`port`, `dbname`), read through Powertools Parameters and cached for `max_age_s`. The pool
asks for connection parameters on every new connection (psycopg_pool accepts a callable
conninfo), so a rotated password is picked up without restarting. An authentication failure
expires the cached copy at once: the pool's next attempt fetches the secret again instead of
retrying stale credentials until the cache runs out.

boto3 (through Powertools Parameters) is imported only here and only when a secret is
configured; functions without one never load it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection, OperationalError
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow

from edgemart.errors import EdgemartError

if TYPE_CHECKING:
    from edgemart.tracing.tracer import Tracing

AUTH_FAILURE_SQLSTATES = frozenset({"28P01", "28000"})


class DatabaseSecretError(EdgemartError):
    """The secret cannot be read or does not hold usable connection parameters."""


def conninfo_from_secret(
    secret: Mapping[str, Any], *, host: str | None = None, dbname: str | None = None
) -> str:
    """Pure: a libpq connection string from an RDS-style secret; `host` (an RDS Proxy or
    Supavisor endpoint) and `dbname` override the secret's."""
    missing = [key for key in ("username", "password") if not secret.get(key)]
    if missing:
        raise DatabaseSecretError(f"database secret lacks {', '.join(missing)}")
    params: dict[str, Any] = {
        "user": secret["username"],
        "password": secret["password"],
        "host": host or secret.get("host"),
        "port": secret.get("port"),
        "dbname": dbname or secret.get("dbname") or secret.get("dbInstanceIdentifier"),
    }
    return make_conninfo(**{key: value for key, value in params.items() if value})


def is_auth_failure(exc: OperationalError) -> bool:
    return exc.sqlstate in AUTH_FAILURE_SQLSTATES or "authentication failed" in str(exc)


@dataclass(eq=False, repr=False)
class DatabaseSecret:
    """An async conninfo callable for psycopg_pool, backed by a Secrets Manager secret."""

    arn: str
    _: KW_ONLY
    host: str | None = None
    dbname: str | None = None
    max_age_s: int = 300
    tracing: Tracing | None = None
    _expired: bool = field(default=False, init=False)
    _provider: Any = field(default=None, init=False)

    def expire(self) -> None:
        """Fetch the secret again on the next connection (credentials were refused)."""
        self._expired = True

    def fetch(self) -> str:
        from aws_lambda_powertools.utilities import parameters

        force, self._expired = self._expired, False
        try:
            options: dict[str, Any] = {
                "transform": "json",
                "max_age": self.max_age_s,
                "force_fetch": force,
            }
            if self.tracing is None:
                value = parameters.get_secret(self.arn, **options)
            else:
                value = self._traced_provider(self.tracing).get(self.arn, **options)
        except Exception as exc:  # boto3 and Powertools raise many types; all mean "unreadable"
            raise DatabaseSecretError(f"cannot read database secret {self.arn}: {exc}") from exc
        if not isinstance(value, Mapping):
            raise DatabaseSecretError(f"database secret {self.arn} is not a JSON object")
        return conninfo_from_secret(value, host=self.host, dbname=self.dbname)

    def _traced_provider(self, tracing: Tracing) -> Any:
        """A Secrets Manager provider of this secret's own, whose client's calls are traced;
        it reads and caches as `parameters.get_secret` does."""
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            provider = SecretsProvider()
            tracing.trace_aws_client(provider.client)
            self._provider = provider
        return self._provider

    async def __call__(self) -> str:
        return await asyncio.to_thread(self.fetch)

    def connection_class(self) -> type[AsyncConnection[DictRow]]:
        """A connection class that expires this secret when the server refuses the
        credentials, so the pool's next attempt uses freshly fetched ones."""
        secret = self

        class SecretAuthConnection(AsyncConnection[DictRow]):
            @classmethod
            async def connect(cls, conninfo: str = "", **kwargs: Any) -> SecretAuthConnection:
                try:
                    return await super().connect(conninfo, **kwargs)
                except OperationalError as exc:
                    if is_auth_failure(exc):
                        secret.expire()
                    raise

        return SecretAuthConnection
