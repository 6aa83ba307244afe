"""Typed configuration read from the environment, each setting declared once.

A setting is one field of `Settings`, declared with `setting()`: its type (the annotation), its
default, the parser that reads and checks its variable, the concern it belongs to and one line
saying what it does. Everything else is derived from that declaration: the variable's name
(the field's, upper-cased, unless the declaration names another), `Settings.from_env`, the
error a bad value raises, and docs/configuration.md (`python -m edgemart.settingsdocs`).

A value that cannot be parsed is a `SettingsError` naming the variable, never a silent
default; an empty value counts as unset.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

from edgemart import __version__
from edgemart.currencies import ISO_4217_CODES
from edgemart.errors import EdgemartError
from edgemart.ratelimit.groups import DEFAULT_POLICIES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RateLimitOverride = tuple[str, int, int]
"""(group, limit, window seconds); limit 0 switches the group's limit off."""

# Route groups whose limits RATE_LIMIT_<GROUP> overrides: every group that has a policy.
RATE_LIMIT_GROUPS = tuple(DEFAULT_POLICIES)

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)
D = TypeVar("D")


class SettingsError(EdgemartError):
    """An environment variable holds a value edgemart cannot use."""


Concern = Literal[
    "Database",
    "When the database is unavailable",
    "Redis & rate limiting",
    "HTTP & logging",
    "Auth",
    "Search & pagination",
    "Money, purchases & admin",
    "Jobs & scoring",
    "Local development",
]
"""What a setting is about: the documentation's sections, in this order."""


class Unset:
    """What a parser reads when its variable is unset (or empty): keep the default."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


# ---- Parsers: one per kind of value; each names the variable in its errors ----


class Parser(Generic[V_co]):
    """Reads one setting from the environment: one variable, unless a subclass says more.

    `KIND` is what the variable holds, in the documentation's words; a parser whose kind
    depends on its arguments overrides `kind` instead."""

    __slots__ = ()
    KIND: ClassVar[str]

    def kind(self) -> str:
        """What the variable holds, in the documentation's words."""
        return self.KIND

    def variables(self, name: str) -> tuple[str, ...]:
        """The variables this setting reads, given its declared variable name."""
        return (name,)

    def read(self, name: str, environ: Mapping[str, str]) -> V_co | Unset:
        raw = environ.get(name, "").strip()
        return self.parse(name, raw) if raw else UNSET

    def parse(self, name: str, raw: str) -> V_co:
        """The value of variable `name` set to `raw` (stripped, not empty)."""
        raise NotImplementedError


def _converted(convert: Callable[[str], V], raw: str, error: str) -> V:
    """`convert(raw)`, its ValueError turned into a `SettingsError` saying `error`."""
    try:
        return convert(raw)
    except ValueError:
        raise SettingsError(error) from None


class Text(Parser[str]):
    """Any text; `kind` says what it is for the documentation (a URL, a secret, ...)."""

    __slots__ = ("_kind",)

    def __init__(self, kind: str = "text") -> None:
        self._kind = kind

    def kind(self) -> str:
        return self._kind

    def parse(self, name: str, raw: str) -> str:
        return raw


class FilePath(Parser[Path]):
    __slots__ = ()
    KIND = "path"

    def parse(self, name: str, raw: str) -> Path:
        return Path(raw)


class Integer(Parser[int]):
    """A whole number, within `low` and `high` when given."""

    __slots__ = ("low", "high")

    def __init__(self, *, low: int | None = None, high: int | None = None) -> None:
        self.low = low
        self.high = high

    def kind(self) -> str:
        return f"integer{_range(self.low, self.high)}"

    def parse(self, name: str, raw: str) -> int:
        value = _converted(int, raw, f"{name} must be an integer, got {raw!r}")
        if self.low is not None and value < self.low:
            raise SettingsError(f"{name} must be >= {self.low}, got {value}")
        if self.high is not None and value > self.high:
            raise SettingsError(f"{name} must be <= {self.high}, got {value}")
        return value


class Number(Parser[float]):
    """A number from 0 up (NaN refused), at most `high` when given."""

    __slots__ = ("high",)

    def __init__(self, *, high: float | None = None) -> None:
        self.high = high

    def kind(self) -> str:
        return f"number{_range(0, self.high)}"

    def parse(self, name: str, raw: str) -> float:
        value = _converted(float, raw, f"{name} must be a number, got {raw!r}")
        if not value >= 0 or (self.high is not None and value > self.high):
            bound = f"between 0 and {self.high}" if self.high is not None else ">= 0"
            raise SettingsError(f"{name} must be {bound}, got {raw!r}")
        return value


class Choice(Parser[str]):
    """One of a few words, compared lower-cased (upper-cased when `upper`)."""

    __slots__ = ("allowed", "upper")

    def __init__(self, *allowed: str, upper: bool = False) -> None:
        self.allowed = allowed
        self.upper = upper

    def kind(self) -> str:
        return "one of " + ", ".join(f"`{word}`" for word in self.allowed)

    def parse(self, name: str, raw: str) -> str:
        value = raw.upper() if self.upper else raw.lower()
        if value not in self.allowed:
            raise SettingsError(f"{name} must be one of {', '.join(self.allowed)}, got {raw!r}")
        return value


class Currency(Parser[str]):
    """An ISO 4217 code of a circulating currency, in any case; read upper-cased."""

    __slots__ = ()
    KIND = "ISO 4217 code"

    def parse(self, name: str, raw: str) -> str:
        if raw.upper() not in ISO_4217_CODES:
            raise SettingsError(f"{name} must be an ISO 4217 currency code, got {raw!r}")
        return raw.upper()


class _CommaSeparated(Parser[tuple[V, ...]]):
    """A comma-separated list; empty items are skipped, each other item parsed by `item`."""

    __slots__ = ()

    def parse(self, name: str, raw: str) -> tuple[V, ...]:
        return tuple(self.item(name, part) for part in (p.strip() for p in raw.split(",")) if part)

    def item(self, name: str, part: str) -> V:
        raise NotImplementedError


class Networks(_CommaSeparated[IPNetwork]):
    """Comma-separated IP networks (a bare address is a network of one)."""

    __slots__ = ()
    KIND = "comma-separated CIDRs"

    def item(self, name: str, part: str) -> IPNetwork:
        return _converted(_network, part, f"{name}: {part!r} is not an IP network")


def _network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=False)


class Origins(_CommaSeparated[str]):
    """Comma-separated `scheme://host[:port]` origins, as browsers send them."""

    __slots__ = ()
    KIND = "comma-separated origins"

    def item(self, name: str, part: str) -> str:
        scheme, separator, rest = part.partition("://")
        if scheme not in ("http", "https") or not separator or not rest or "/" in rest:
            raise SettingsError(f"{name}: {part!r} is not an origin (scheme://host[:port])")
        return part.lower()


class Intervals(_CommaSeparated[tuple[str, float]]):
    """Comma-separated `name=seconds` (seconds a positive number), each name once."""

    __slots__ = ()
    KIND = "comma-separated `name=seconds`"

    def parse(self, name: str, raw: str) -> tuple[tuple[str, float], ...]:
        pairs = super().parse(name, raw)
        names = [key for key, _ in pairs]
        twice = sorted({key for key in names if names.count(key) > 1})
        if twice:
            raise SettingsError(f"{name} names {', '.join(twice)} more than once")
        return pairs

    def item(self, name: str, part: str) -> tuple[str, float]:
        key, separator, value = (p.strip() for p in part.partition("="))
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not (separator and key.isidentifier() and 0 < seconds < float("inf")):
            raise SettingsError(f"{name}: {part!r} is not name=seconds (seconds above 0)")
        return (key, seconds)


class RateLimits(Parser[tuple[RateLimitOverride, ...]]):
    """One variable per group, `<NAME>_<GROUP>` = `LIMIT/WINDOW_SECONDS` (e.g. `60/60`) or `off`.

    The declaration's documentation line is written once for all groups, naming the group as
    `{group}`."""

    __slots__ = ("groups",)
    KIND = "`LIMIT/WINDOW_SECONDS` or `off`"

    def __init__(self, groups: tuple[str, ...]) -> None:
        self.groups = groups

    def variables(self, name: str) -> tuple[str, ...]:
        return tuple(f"{name}_{group.upper()}" for group in self.groups)

    def read(self, name: str, environ: Mapping[str, str]) -> tuple[RateLimitOverride, ...] | Unset:
        overrides: list[RateLimitOverride] = []
        for group, variable in zip(self.groups, self.variables(name), strict=True):
            raw = environ.get(variable, "").strip()
            if raw:
                overrides.append(self.override(variable, group, raw))
        return tuple(overrides) if overrides else UNSET

    @staticmethod
    def override(variable: str, group: str, raw: str) -> RateLimitOverride:
        if raw.lower() == "off":
            return (group, 0, 60)
        limit, _, window = raw.partition("/")
        usage = f"{variable} must be LIMIT/WINDOW_SECONDS or off, got {raw!r}"
        parsed = (group, _converted(int, limit, usage), _converted(int, window, usage))
        if parsed[1] < 1 or parsed[2] < 1:
            raise SettingsError(f"{variable} needs a limit and a window of at least 1, got {raw!r}")
        return parsed


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f", {_plain(low)} to {_plain(high)}"
    if low is not None:
        return f" >= {_plain(low)}"
    if high is not None:
        return f" <= {_plain(high)}"
    return ""


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


# ---- Declarations ----


class _Declaration(NamedTuple):
    """What `setting()` stores in its field's metadata."""

    parser: Parser[object]
    concern: Concern
    doc: str
    env: str | None
    shown_default: str | None


_METADATA_KEY = "edgemart.setting"


def setting(
    default: D,
    parser: Parser[V],
    concern: Concern,
    doc: str,
    *,
    env: str | None = None,
    shown_default: str | None = None,
) -> D | V:
    """Declare one setting, as the default of a `Settings` field.

    `env` names the variable when it is not the field's name upper-cased; `shown_default` is
    what the documentation shows as the default when the value itself would mislead.
    """
    declaration = _Declaration(parser, concern, doc, env, shown_default)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: declaration})


class DeclaredSetting:
    """One declared setting, resolved against its field: what from_env, docs and tests read."""

    __slots__ = ("name", "variable", "default", "parser", "concern", "doc", "shown_default")

    def __init__(self, field: dataclasses.Field[object]) -> None:
        declaration = field.metadata.get(_METADATA_KEY)
        if not isinstance(declaration, _Declaration):
            raise TypeError(f"{field.name} is not declared with setting()")
        self.name = field.name
        self.variable = declaration.env or field.name.upper()
        self.default: object = field.default
        self.parser = declaration.parser
        self.concern = declaration.concern
        self.doc = declaration.doc
        self.shown_default = declaration.shown_default

    @property
    def variables(self) -> tuple[str, ...]:
        return self.parser.variables(self.variable)


def declared_settings(cls: type[DataclassInstance]) -> tuple[DeclaredSetting, ...]:
    """Every field of dataclass `cls`, each of which must be declared with `setting()`."""
    return tuple(DeclaredSetting(field) for field in dataclasses.fields(cls))


# ---- The settings ----


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting edgemart reads, grouped by concern; see docs/configuration.md."""

    database_url: str | None = setting(
        None,
        Text("URL"),
        "Database",
        "PostgreSQL for writes, and for reads when no replica is set. Unset: `edgemart serve` "
        "starts an embedded server, and a function (without `DATABASE_SECRET_ARN`) fails its "
        "database calls with an error saying so",
    )
    migration_database_url: str | None = setting(
        None,
        Text("URL"),
        "Database",
        "PostgreSQL as the role that owns the schema, for `edgemart migrate` and `edgemart "
        "serve`'s migrations; the application connects with `DATABASE_URL`, as a role that "
        "owns nothing (docs/operations.md#database-roles). Unset: `DATABASE_URL`",
        shown_default="`DATABASE_URL`",
    )
    database_secret_arn: str | None = setting(
        None,
        Text("ARN"),
        "Database",
        "Secrets Manager secret (RDS JSON) holding the primary's credentials, used instead of "
        "`DATABASE_URL`. Read through Powertools Parameters, kept for "
        "`DATABASE_SECRET_MAX_AGE_S`, and read again at once when the server refuses the "
        "password (a rotation); boto3 is imported only when this is set",
    )
    database_host: str | None = setting(
        None,
        Text("host"),
        "Database",
        "where to connect with the secret's credentials (an RDS Proxy or Supavisor endpoint); "
        "unset: the host named in the secret",
    )
    database_secret_max_age_s: int = setting(
        300,
        Integer(low=0),
        "Database",
        "seconds the secret's credentials are kept before reading it again",
    )
    database_replica_url: str | None = setting(
        None,
        Text("URL"),
        "Database",
        "a streaming read replica (an RDS read replica, an Aurora reader endpoint) for the "
        "public pages' reads while it keeps up (`REPLICA_MAX_LAG_S`); every other read, and "
        "every write, goes to the primary. Unset: all reads go to the primary",
    )
    database_replica_host: str | None = setting(
        None,
        Text("host"),
        "Database",
        "the replica's endpoint, connected to with `DATABASE_SECRET_ARN`'s credentials (a "
        "streaming replica has the primary's roles), when `DATABASE_REPLICA_URL` is unset",
    )
    replica_max_lag_s: float = setting(
        5.0,
        Number(),
        "Database",
        "replication lag past which public reads skip the replica for the primary; it is "
        "taken back once its lag is at most half of this",
    )
    replica_check_interval_s: float = setting(
        1.0,
        Number(),
        "Database",
        "most often a process measures the replica's lag (one one-row query on each "
        "database), and only while it has reads to route; keep it well under "
        "`REPLICA_MAX_LAG_S`",
    )
    read_your_writes_s: float = setting(
        5.0,
        Number(),
        "Database",
        "seconds after a write (this process's, or another's it is told of) during which "
        "the process's public reads go to the primary; over sooner once the replica is seen "
        "to hold the write",
    )
    database_pooler: str = setting(
        "session",
        Choice("session", "transaction"),
        "Database",
        "`transaction` when connecting through a transaction pooler (PgBouncer, Supavisor, RDS "
        "Proxy): server-side prepared statements are then never used",
    )
    db_pool_min_size: int = setting(
        1,
        Integer(low=0),
        "Database",
        "fewest connections a pool keeps (one pool per database, per process)",
    )
    db_pool_max_size: int = setting(
        10,
        Integer(low=1),
        "Database",
        "most connections a pool opens (one pool per database, per process)",
    )
    db_pool_timeout_s: float = setting(
        5.0, Number(), "Database", "seconds a request waits for a free pooled connection"
    )
    db_statement_timeout_ms: int = setting(
        5000,
        Integer(low=0),
        "Database",
        "server-side statement timeout (0: none), sent as a connection option. Transaction "
        "poolers refuse connection options: with `DATABASE_POOLER=transaction`, set it on the "
        "database role instead",
    )

    health_db_timeout_s: float = setting(
        2.0,
        Number(),
        "When the database is unavailable",
        "seconds `/health` gives its database check",
    )
    circuit_failure_threshold: int = setting(
        5,
        Integer(low=1),
        "When the database is unavailable",
        "consecutive database-unavailable errors (connection lost, statement timeout, pool "
        "exhausted) that open a pool's circuit; while it is open, calls are refused at once",
    )
    circuit_success_threshold: int = setting(
        3,
        Integer(low=1),
        "When the database is unavailable",
        "successful probes that close the circuit again",
    )
    circuit_open_timeout_s: float = setting(
        30.0,
        Number(),
        "When the database is unavailable",
        "seconds the circuit stays open before one probe is let through",
    )

    redis_url: str | None = setting(
        None,
        Text("URL"),
        "Redis & rate limiting",
        "Redis shared by every process for rate limits, counters and the shared page cache "
        "(`redis://` or `unix://`)",
    )
    upstash_redis_rest_url: str | None = setting(
        None,
        Text("URL"),
        "Redis & rate limiting",
        "Upstash Redis over its REST API: the database's REST URL",
    )
    upstash_redis_rest_token: str | None = setting(
        None,
        Text("secret"),
        "Redis & rate limiting",
        "Upstash Redis over its REST API: the REST token",
    )
    rate_limit_backend: str = setting(
        "auto",
        Choice("auto", "memory", "redis", "upstash"),
        "Redis & rate limiting",
        "where rate-limit counts live. `auto`: Upstash when its URL and token are set, else "
        "Redis when `REDIS_URL` is set, else each process's memory. Naming a backend whose "
        "settings are missing is an error at start-up",
    )
    rate_limit_algorithm: str = setting(
        "log",
        Choice("log", "counter"),
        "Redis & rate limiting",
        "`log`: an exact sliding log; `counter`: the two-counter approximation (O(1) memory per "
        "key, at most twice the limit in a window's worst case)",
    )
    rate_limit_overrides: tuple[RateLimitOverride, ...] = setting(
        (),
        RateLimits(RATE_LIMIT_GROUPS),
        "Redis & rate limiting",
        "limit on the `{group}` group's routes (the route table puts each route in a group), "
        "replacing the default; `off` lifts it",
        env="RATE_LIMIT",
    )
    rate_limit_timeout_ms: float = setting(
        50.0,
        Number(),
        "Redis & rate limiting",
        "milliseconds a check waits for Redis or Upstash before this request is checked by the "
        "process's own limiter instead",
    )
    rate_limit_memory_max_keys: int = setting(
        100_000,
        Integer(low=1),
        "Redis & rate limiting",
        "most keys the in-process limiter keeps (least recent go)",
    )
    shared_cache: str = setting(
        "auto",
        Choice("auto", "off"),
        "Redis & rate limiting",
        "`auto`: with `REDIS_URL` set, rendered pages are shared through Redis (one render of a "
        "cold page for the whole fleet) and writes reach every process's cache within a second; "
        "`off`: each process caches alone, and hears only of its own writes",
    )
    shared_cache_namespace: str = setting(
        "edgemart:cache",
        Text("key prefix"),
        "Redis & rate limiting",
        "prefix of the shared cache's Redis keys and channel: each deployment sharing a Redis "
        "needs its own",
    )
    shared_cache_timeout_ms: float = setting(
        50.0,
        Number(),
        "Redis & rate limiting",
        "milliseconds a shared-cache lookup waits for Redis before the page is served from the "
        "process's own cache or the database; after a failure Redis is left alone for a second",
    )
    shared_cache_fill_wait_ms: float = setting(
        1000.0,
        Number(),
        "Redis & rate limiting",
        "milliseconds a process waits for another process's render of a cold page before "
        "rendering it itself (also how long the fill lock lives)",
    )

    log_level: str = setting(
        "INFO",
        Choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True),
        "HTTP & logging",
        "least severe log level written",
    )
    access_log_sample_rate: float = setting(
        0.01,
        Number(high=1.0),
        "HTTP & logging",
        "share of 2xx and 3xx requests written to the access log; every 4xx, 5xx and slow "
        "request is always written. `edgemart serve` writes every request unless this is set",
    )
    slow_request_ms: float = setting(
        1000.0,
        Number(),
        "HTTP & logging",
        "milliseconds from which a request is slow, and always logged",
    )
    max_body_bytes: int = setting(
        65536,
        Integer(low=0),
        "HTTP & logging",
        "largest request body accepted (chunked bodies included); a larger one is 413",
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        (),
        Networks(),
        "HTTP & logging",
        "peers whose `CloudFront-Viewer-Address`, `CF-Connecting-IP` or `X-Forwarded-For` "
        "names the client; unset: the TCP peer is the client",
    )
    cors_allow_origins: tuple[str, ...] = setting(
        (),
        Origins(),
        "HTTP & logging",
        "browser origins (`https://shop.example`, `http://localhost:3000`) allowed to call "
        "the API from another origin; unset: no CORS headers at all, and a preflight "
        "`OPTIONS` is 405",
    )
    tenancy: str = setting(
        "single",
        Choice("single", "multi"),
        "HTTP & logging",
        "`single`: one marketplace, the `default` tenant, on every host; `multi`: a request's "
        "marketplace is the tenant owning its host in `tenant_domains` (`Host`, or a "
        "`TRUSTED_PROXIES` peer's `CloudFront-Viewer-Host` / `X-Forwarded-Host`). An unknown "
        "host is 404 `tenant_not_found` except on `/health*`, `/platform/*` and `/metrics`, "
        "and a token must name the host's tenant in its `org_id` (403 `tenant_mismatch`)",
    )
    ws_max_connections_per_client: int = setting(
        20,
        Integer(low=1),
        "HTTP & logging",
        "live updates: WebSocket connections one client address may hold open on one gateway "
        "process (or, on AWS, across the WebSocket API); one more is refused with 429",
    )
    ws_idle_timeout_s: float = setting(
        600.0,
        Number(),
        "HTTP & logging",
        "live updates: seconds a WebSocket may go without a message from its client (a "
        "`ping` counts) before the server closes it",
    )
    ws_send_queue: int = setting(
        256,
        Integer(low=1),
        "HTTP & logging",
        "live updates: messages a gateway WebSocket may have waiting to be sent; a client "
        "that reads so slowly its queue fills is closed with 1013 so it never delays anyone",
    )
    ws_api_endpoint: str | None = setting(
        None,
        Text("URL"),
        "HTTP & logging",
        "live updates on AWS: the WebSocket API's management endpoint "
        "(`https://<api>.execute-api.<region>.amazonaws.com/<stage>`); when set, a function "
        "that commits a change posts it to the subscribed connections (the template sets it)",
    )
    metrics_bearer_token: str | None = setting(
        None,
        Text("secret"),
        "HTTP & logging",
        "when set, the gateway's `GET /metrics` (Prometheus) answers only requests sending "
        "`Authorization: Bearer` with this token, and 401 to any other; unset: anyone who "
        "reaches the gateway can scrape it",
    )
    tracing: str = setting(
        "off",
        Choice("off", "xray", "otlp"),
        "HTTP & logging",
        "a trace per request and job run, with a span per database statement, Redis command "
        "and AWS call, and the trace id on every log line of it. `xray`: to the X-Ray daemon "
        "(`AWS_XRAY_DAEMON_ADDRESS`; in Lambda, the function's own segment: the template sets "
        "`Tracing: Active` with this); `otlp`: OTLP over HTTP to "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` (Jaeger or a collector; the `gateway` extra installs "
        "its exporter). `off` loads no tracing code at all",
    )
    xray_daemon_address: str = setting(
        "127.0.0.1:2000",
        Text("host:port"),
        "HTTP & logging",
        "where `TRACING=xray` sends its UDP segment documents; Lambda sets it for a function "
        "with active tracing",
        env="AWS_XRAY_DAEMON_ADDRESS",
    )
    version: str = setting(
        __version__,
        Text(),
        "HTTP & logging",
        "the version `/health` reports",
        env="EDGEMART_VERSION",
        shown_default="the package's version",
    )
    metrics_namespace: str = setting(
        "edgemart",
        Text("CloudWatch namespace"),
        "HTTP & logging",
        "CloudWatch namespace of the metrics the Lambda functions write (EMF)",
    )
    metrics_service: str = setting(
        "edgemart",
        Text(),
        "HTTP & logging",
        "the `service` dimension every CloudWatch metric carries",
    )
    edge_purge: str = setting(
        "off",
        Choice("off", "varnish", "cloudfront"),
        "HTTP & logging",
        "what a committed write drops at the edge. `varnish`: a `BAN` per changed tag or "
        "search prefix to `EDGE_PURGE_URL` (the local edge from `edgemart edge-vcl`), as soon "
        "as it commits; `cloudfront`: a `CreateInvalidation` of the changed pages' paths, at "
        "most one per second per process, each path billed by AWS past the free tier. `off`: "
        "edge copies live out their TTL, at most 10 s for pages showing stock",
    )
    edge_purge_url: str | None = setting(
        None,
        Text("URL"),
        "HTTP & logging",
        "where `EDGE_PURGE=varnish` sends its bans (`http://127.0.0.1:8080`); the VCL must "
        "let this process's address ban (`edgemart edge-vcl --purger`, loopback always may)",
    )
    cloudfront_distribution_id: str | None = setting(
        None,
        Text("ID"),
        "HTTP & logging",
        "the CloudFront distribution `EDGE_PURGE=cloudfront` invalidates",
    )
    cloudfront_distribution_parameter: str | None = setting(
        None,
        Text("SSM parameter name"),
        "HTTP & logging",
        "an SSM parameter holding the distribution's id, read once at the first purge, when "
        "`CLOUDFRONT_DISTRIBUTION_ID` is unset (the template's way: a function cannot be "
        "handed the id of a distribution that depends on it through the API)",
    )

    jwt_secret: str | None = setting(
        None,
        Text("secret"),
        "Auth",
        "HS256 signing secret (development). With neither this nor `JWT_JWKS_URL`, "
        "`edgemart serve` makes a random one in `EDGEMART_DATA_DIR/jwt-secret` (and warns), "
        "which `edgemart token` signs with",
    )
    jwt_jwks_url: str | None = setting(
        None, Text("URL"), "Auth", "JWKS with the RS256/ES256 public keys (production)"
    )
    jwt_issuer: str | None = setting(
        None, Text(), "Auth", "when set, a token's `iss` must equal it"
    )
    jwt_audience: str | None = setting(
        None, Text(), "Auth", "when set, a token's `aud` must name it"
    )
    jwt_leeway_s: float = setting(
        0.0, Number(high=300.0), "Auth", "clock skew allowed on a token's `exp`, `nbf` and `iat`"
    )
    jwt_max_token_lifetime_s: int | None = setting(
        None,
        Integer(low=1),
        "Auth",
        "when set, a token whose `exp` lies further ahead than this (plus the leeway) is "
        "refused; unset: no cap, though an `exp` past the year 9999 is always refused",
    )
    jwt_jwks_max_age_s: int = setting(
        300,
        Integer(low=10),
        "Auth",
        "the JWKS is fetched again once it is this old, sooner when its `Cache-Control: "
        "max-age` says so (never more often than every 30 s); a key gone from it is refused "
        "from then on. A failed fetch keeps the previous keys for one more max age (retried "
        "every 10 s); after that RS256/ES256 tokens are refused until a fetch succeeds",
    )

    cursor_secret: str | None = setting(
        None,
        Text("secret"),
        "Search & pagination",
        "HMAC key signing pagination cursors and hashing popular-search clients; unset: a "
        "random key per process. Set it, to one value everywhere, as soon as more than one "
        "process serves reads, or one refuses the cursors another made",
    )
    search_statement_timeout_ms: int = setting(
        1000,
        Integer(low=1),
        "Search & pagination",
        "longest a search page's statements may run; a slower search is 503 `search_timeout`",
    )
    search_trending_period_s: int = setting(
        3600,
        Integer(low=60),
        "Search & pagination",
        "period whose searches are compared with the period before to mark a popular search "
        "as trending",
    )
    popular_search_min_clients: int = setting(
        5,
        Integer(low=1),
        "Search & pagination",
        "distinct clients (token subject, else IP address) that must search a query within "
        "one trending period before it is listed as popular",
    )
    search_history_days: int = setting(
        90,
        Integer(low=1),
        "Search & pagination",
        "days of search history kept; maintenance trims older entries",
    )

    platform_fee_basis_points: int = setting(
        1000,
        Integer(low=0, high=10_000),
        "Money, purchases & admin",
        "platform fee on each order, in basis points (1000 is 10%), rounded half up to the cent",
        env="PLATFORM_FEE_BPS",
    )
    marketplace_currency: str = setting(
        "USD",
        Currency(),
        "Money, purchases & admin",
        "the marketplace's one currency: wallets credited by an admin are opened in it, only "
        "products priced in it can be bought (another is 404 `product_not_found`), and orders "
        "record it",
    )
    idempotency_key_ttl_s: int = setting(
        86_400,
        Integer(low=60),
        "Money, purchases & admin",
        "seconds a purchase's Idempotency-Key is remembered, and its response replayed",
    )
    idempotency_key_wait_s: float = setting(
        5.0,
        Number(),
        "Money, purchases & admin",
        "seconds a duplicate request waits for the first one with its key before it is 409",
    )
    idempotency_retention_s: int = setting(
        86_400,
        Integer(low=0),
        "Money, purchases & admin",
        "seconds a partition of expired keys is kept before maintenance drops it",
    )
    purchase_queue_url: str | None = setting(
        None,
        Text("URL"),
        "Money, purchases & admin",
        "SQS queue for queued purchases (for hot items); unset: queued mode is off and every "
        "purchase is direct",
    )
    sqs_endpoint_url: str | None = setting(
        None,
        Text("URL"),
        "Money, purchases & admin",
        "a local SQS endpoint for the gateway (ElasticMQ, moto server); unset: AWS",
    )
    kill_switch_cooldown_s: int = setting(
        60,
        Integer(low=0),
        "Money, purchases & admin",
        "seconds that must pass between two flips of one kill switch",
    )

    scoring_model_path: Path | None = setting(
        None,
        FilePath(),
        "Jobs & scoring",
        "listing-quality ONNX model (its signature: docs/scoring.md); unset: the model shipped "
        "in the layer, `edgemart/scoring/listing_quality.onnx`",
    )
    scoring_batch_size: int = setting(
        256, Integer(low=1), "Jobs & scoring", "listings claimed and scored per batch"
    )
    scoring_max_batches: int = setting(
        20, Integer(low=1), "Jobs & scoring", "most batches one score_listings run scores"
    )
    scoring_max_attempts: int = setting(
        3,
        Integer(low=1),
        "Jobs & scoring",
        "claims of one listing before it gets the fallback score and is flagged",
    )
    scoring_lease_s: int = setting(
        120, Integer(low=1), "Jobs & scoring", "seconds a claimed listing is kept from other runs"
    )
    schedule_intervals: tuple[tuple[str, float], ...] = setting(
        (),
        Intervals(),
        "Jobs & scoring",
        "seconds between runs of the gateway's schedules named here, instead of their "
        "defaults (the rates template.yaml gives EventBridge; Lambda ignores this), e.g. "
        "`refresh_views=60,score_listings=10`; a name that is none of the gateway's schedules "
        "is an error at start-up, which lists them",
    )
    scheduler_lease_ttl_s: int = setting(
        15,
        Integer(low=3),
        "Jobs & scoring",
        "seconds the gateway's scheduler lease lasts. Of all the gateway processes on one "
        "database, the holder runs the scheduled jobs (every process runs the heartbeat): it "
        "renews the lease every third of this and stops running jobs a fifth of it before the "
        "lease would end unrenewed; when it dies, a standby takes over about this long after "
        "its last renewal",
    )

    data_dir: Path = setting(
        Path(".edgemart-data"),
        FilePath(),
        "Local development",
        "folder of `edgemart serve`'s embedded database and development JWT secret, where "
        "`edgemart seed`, `migrate` and `token` find them too (gitignored); a command's "
        "`--data-dir` takes precedence",
        env="EDGEMART_DATA_DIR",
    )

    @property
    def owner_database_url(self) -> str | None:
        """Where migrations run: `MIGRATION_DATABASE_URL`, else `DATABASE_URL`."""
        return self.migration_database_url or self.database_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        # Each value has its field's type: setting() checks parser against field when declared.
        values: dict[str, Any] = {}
        for declared in DECLARED:
            value = declared.parser.read(declared.variable, env)
            if value is not UNSET:
                values[declared.name] = value
        return cls(**values)


DECLARED = declared_settings(Settings)
"""Every setting, in declaration order."""
_DECLARED_BY_NAME = {declared.name: declared for declared in DECLARED}


def environment_value(name: str, environ: Mapping[str, str]) -> object:
    """Setting `name` as `environ` sets it, read by its declaration (its variable, parsing and
    errors), or `UNSET`: for a caller that must know whether it was set at all."""
    declared = _DECLARED_BY_NAME[name]
    return declared.parser.read(declared.variable, environ)
