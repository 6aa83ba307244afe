"""Typed configuration read from the environment, in one place.

Every knob is documented in README.md ("Configuration"). A value that cannot be parsed is a
`SettingsError` naming the variable, never a silent default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgemart import __version__
from edgemart.currencies import ISO_4217_CODES
from edgemart.errors import EdgemartError
from edgemart.ratelimit.groups import DEFAULT_POLICIES

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Route groups whose limits RATE_LIMIT_<GROUP> overrides: every group that has a policy.
RATE_LIMIT_GROUPS = tuple(DEFAULT_POLICIES)


class SettingsError(EdgemartError):
    """An environment variable holds a value edgemart cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    # Credentials from Secrets Manager (RDS JSON) instead of DATABASE_URL; DATABASE_HOST
    # overrides the secret's host (an RDS Proxy or Supavisor endpoint).
    database_secret_arn: str | None = None
    database_host: str | None = None
    database_secret_max_age_s: int = 300
    database_replica_url: str | None = None
    database_pooler: str = "session"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    db_pool_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 5000
    redis_url: str | None = None
    upstash_redis_rest_url: str | None = None
    upstash_redis_rest_token: str | None = None
    rate_limit_backend: str = "auto"
    rate_limit_algorithm: str = "log"
    rate_limit_timeout_ms: float = 50.0
    rate_limit_memory_max_keys: int = 100_000
    # (group, limit, window seconds); limit 0 switches the group's limit off.
    rate_limit_overrides: tuple[tuple[str, int, int], ...] = ()
    data_dir: Path = Path(".edgemart-data")
    log_level: str = "INFO"
    access_log_sample_rate: float = 0.01
    slow_request_ms: float = 1000.0
    max_body_bytes: int = 65536
    trusted_proxies: tuple[IPNetwork, ...] = field(default_factory=tuple)
    # Browser origins allowed to call the API (CORS); empty: no CORS headers at all.
    cors_allow_origins: tuple[str, ...] = ()
    health_db_timeout_s: float = 2.0
    circuit_failure_threshold: int = 5
    circuit_success_threshold: int = 3
    circuit_open_timeout_s: float = 30.0
    cursor_secret: str | None = None
    search_trending_period_s: int = 3600
    # A popular search is listed once this many distinct clients searched it (anti-spam).
    popular_search_min_clients: int = 5
    # Server-side bound on one search's statements (a search that takes longer is refused).
    search_statement_timeout_ms: int = 1000
    jwt_secret: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Clock skew allowed on `exp`/`nbf`/`iat`, and an optional cap on how far ahead `exp` may lie.
    jwt_leeway_s: float = 0.0
    jwt_max_token_lifetime_s: int | None = None
    # JWKS keys are fetched again at least this often (sooner when Cache-Control says so).
    jwt_jwks_max_age_s: int = 300
    kill_switch_cooldown_s: int = 60
    platform_fee_basis_points: int = 1000
    # ISO 4217 code of the one currency every listing, wallet and order of this marketplace uses.
    marketplace_currency: str = "USD"
    idempotency_key_ttl_s: int = 86_400
    idempotency_key_wait_s: float = 5.0
    idempotency_retention_s: int = 86_400
    search_history_days: int = 90
    # Queued purchases (hot items): off unless a queue is configured.
    purchase_queue_url: str | None = None
    sqs_endpoint_url: str | None = None
    # None: the model shipped with the layer (edgemart/scoring/listing_quality.onnx).
    scoring_model_path: Path | None = None
    scoring_batch_size: int = 256
    scoring_max_batches: int = 20
    scoring_max_attempts: int = 3
    scoring_lease_s: int = 120
    version: str = __version__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        defaults = cls()
        return cls(
            database_url=env.text("DATABASE_URL"),
            database_secret_arn=env.text("DATABASE_SECRET_ARN"),
            database_host=env.text("DATABASE_HOST"),
            database_secret_max_age_s=env.integer(
                "DATABASE_SECRET_MAX_AGE_S", defaults.database_secret_max_age_s, low=0
            ),
            database_replica_url=env.text("DATABASE_REPLICA_URL"),
            database_pooler=env.choice(
                "DATABASE_POOLER", ("session", "transaction"), defaults.database_pooler
            ),
            db_pool_min_size=env.integer("DB_POOL_MIN_SIZE", defaults.db_pool_min_size, low=0),
            db_pool_max_size=env.integer("DB_POOL_MAX_SIZE", defaults.db_pool_max_size, low=1),
            db_pool_timeout_s=env.number("DB_POOL_TIMEOUT_S", defaults.db_pool_timeout_s),
            db_statement_timeout_ms=env.integer(
                "DB_STATEMENT_TIMEOUT_MS", defaults.db_statement_timeout_ms, low=0
            ),
            redis_url=env.text("REDIS_URL"),
            upstash_redis_rest_url=env.text("UPSTASH_REDIS_REST_URL"),
            upstash_redis_rest_token=env.text("UPSTASH_REDIS_REST_TOKEN"),
            rate_limit_backend=env.choice(
                "RATE_LIMIT_BACKEND", ("auto", "memory", "redis", "upstash"), "auto"
            ),
            rate_limit_algorithm=env.choice("RATE_LIMIT_ALGORITHM", ("log", "counter"), "log"),
            rate_limit_timeout_ms=env.number(
                "RATE_LIMIT_TIMEOUT_MS", defaults.rate_limit_timeout_ms
            ),
            rate_limit_memory_max_keys=env.integer(
                "RATE_LIMIT_MEMORY_MAX_KEYS", defaults.rate_limit_memory_max_keys, low=1
            ),
            rate_limit_overrides=env.rate_limits(RATE_LIMIT_GROUPS),
            data_dir=Path(env.text("EDGEMART_DATA_DIR") or defaults.data_dir),
            log_level=env.choice(
                "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), defaults.log_level, upper=True
            ),
            access_log_sample_rate=env.number(
                "ACCESS_LOG_SAMPLE_RATE", defaults.access_log_sample_rate, high=1.0
            ),
            slow_request_ms=env.number("SLOW_REQUEST_MS", defaults.slow_request_ms),
            max_body_bytes=env.integer("MAX_BODY_BYTES", defaults.max_body_bytes, low=0),
            trusted_proxies=env.networks("TRUSTED_PROXIES"),
            cors_allow_origins=env.origins("CORS_ALLOW_ORIGINS"),
            health_db_timeout_s=env.number("HEALTH_DB_TIMEOUT_S", defaults.health_db_timeout_s),
            circuit_failure_threshold=env.integer(
                "CIRCUIT_FAILURE_THRESHOLD", defaults.circuit_failure_threshold, low=1
            ),
            circuit_success_threshold=env.integer(
                "CIRCUIT_SUCCESS_THRESHOLD", defaults.circuit_success_threshold, low=1
            ),
            circuit_open_timeout_s=env.number(
                "CIRCUIT_OPEN_TIMEOUT_S", defaults.circuit_open_timeout_s
            ),
            cursor_secret=env.text("CURSOR_SECRET"),
            search_trending_period_s=env.integer(
                "SEARCH_TRENDING_PERIOD_S", defaults.search_trending_period_s, low=60
            ),
            popular_search_min_clients=env.integer(
                "POPULAR_SEARCH_MIN_CLIENTS", defaults.popular_search_min_clients, low=1
            ),
            search_statement_timeout_ms=env.integer(
                "SEARCH_STATEMENT_TIMEOUT_MS", defaults.search_statement_timeout_ms, low=1
            ),
            jwt_secret=env.text("JWT_SECRET"),
            jwt_jwks_url=env.text("JWT_JWKS_URL"),
            jwt_issuer=env.text("JWT_ISSUER"),
            jwt_audience=env.text("JWT_AUDIENCE"),
            jwt_leeway_s=env.number("JWT_LEEWAY_S", defaults.jwt_leeway_s, high=300.0),
            jwt_max_token_lifetime_s=env.optional_integer("JWT_MAX_TOKEN_LIFETIME_S", low=1),
            jwt_jwks_max_age_s=env.integer(
                "JWT_JWKS_MAX_AGE_S", defaults.jwt_jwks_max_age_s, low=10
            ),
            kill_switch_cooldown_s=env.integer(
                "KILL_SWITCH_COOLDOWN_S", defaults.kill_switch_cooldown_s, low=0
            ),
            platform_fee_basis_points=env.integer(
                "PLATFORM_FEE_BPS", defaults.platform_fee_basis_points, low=0, high=10_000
            ),
            marketplace_currency=env.currency(
                "MARKETPLACE_CURRENCY", defaults.marketplace_currency
            ),
            idempotency_key_ttl_s=env.integer(
                "IDEMPOTENCY_KEY_TTL_S", defaults.idempotency_key_ttl_s, low=60
            ),
            idempotency_key_wait_s=env.number(
                "IDEMPOTENCY_KEY_WAIT_S", defaults.idempotency_key_wait_s
            ),
            idempotency_retention_s=env.integer(
                "IDEMPOTENCY_RETENTION_S", defaults.idempotency_retention_s, low=0
            ),
            search_history_days=env.integer(
                "SEARCH_HISTORY_DAYS", defaults.search_history_days, low=1
            ),
            purchase_queue_url=env.text("PURCHASE_QUEUE_URL"),
            sqs_endpoint_url=env.text("SQS_ENDPOINT_URL"),
            scoring_model_path=env.path("SCORING_MODEL_PATH"),
            scoring_batch_size=env.integer(
                "SCORING_BATCH_SIZE", defaults.scoring_batch_size, low=1
            ),
            scoring_max_batches=env.integer(
                "SCORING_MAX_BATCHES", defaults.scoring_max_batches, low=1
            ),
            scoring_max_attempts=env.integer(
                "SCORING_MAX_ATTEMPTS", defaults.scoring_max_attempts, low=1
            ),
            scoring_lease_s=env.integer("SCORING_LEASE_S", defaults.scoring_lease_s, low=1),
            version=env.text("EDGEMART_VERSION") or defaults.version,
        )


class _Env:
    """Parses one variable at a time; empty strings count as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def path(self, name: str) -> Path | None:
        text = self.text(name)
        return Path(text) if text else None

    def integer(
        self, name: str, default: int, *, low: int | None = None, high: int | None = None
    ) -> int:
        value = self.optional_integer(name, low=low, high=high)
        return default if value is None else value

    def optional_integer(
        self, name: str, *, low: int | None = None, high: int | None = None
    ) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if low is not None and value < low:
            raise SettingsError(f"{name} must be >= {low}, got {value}")
        if high is not None and value > high:
            raise SettingsError(f"{name} must be <= {high}, got {value}")
        return value

    def currency(self, name: str, default: str) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.upper() not in ISO_4217_CODES:
            raise SettingsError(f"{name} must be an ISO 4217 currency code, got {raw!r}")
        return raw.upper()

    def number(self, name: str, default: float, *, high: float | None = None) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not value >= 0 or (high is not None and value > high):
            bound = f"between 0 and {high}" if high is not None else ">= 0"
            raise SettingsError(f"{name} must be {bound}, got {raw!r}")
        return value

    def choice(
        self, name: str, allowed: tuple[str, ...], default: str, *, upper: bool = False
    ) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    def rate_limits(self, groups: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
        """`RATE_LIMIT_<GROUP>` = `LIMIT/WINDOW_SECONDS` (e.g. `60/60`) or `off`."""
        overrides: list[tuple[str, int, int]] = []
        for group in groups:
            name = f"RATE_LIMIT_{group.upper()}"
            raw = self.text(name)
            if raw is None:
                continue
            if raw.lower() == "off":
                overrides.append((group, 0, 60))
                continue
            limit, _, window = raw.partition("/")
            try:
                parsed = (group, int(limit), int(window))
            except ValueError:
                raise SettingsError(
                    f"{name} must be LIMIT/WINDOW_SECONDS or off, got {raw!r}"
                ) from None
            if parsed[1] < 1 or parsed[2] < 1:
                raise SettingsError(f"{name} needs a limit and a window of at least 1, got {raw!r}")
            overrides.append(parsed)
        return tuple(overrides)

    def origins(self, name: str) -> tuple[str, ...]:
        """Comma-separated `scheme://host[:port]` origins, as browsers send them."""
        raw = self.text(name)
        if raw is None:
            return ()
        origins: list[str] = []
        for part in (part.strip() for part in raw.split(",")):
            if not part:
                continue
            scheme, separator, rest = part.partition("://")
            if scheme not in ("http", "https") or not separator or not rest or "/" in rest:
                raise SettingsError(f"{name}: {part!r} is not an origin (scheme://host[:port])")
            origins.append(part.lower())
        return tuple(origins)

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        raw = self.text(name)
        if raw is None:
            return ()
        networks: list[IPNetwork] = []
        for part in raw.split(","):
            if not part.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise SettingsError(f"{name}: {part.strip()!r} is not an IP network") from None
        return tuple(networks)
