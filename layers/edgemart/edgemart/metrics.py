"""The metrics table: every metric edgemart records, each declared once, and the process's
in-memory series of them.

A metric is declared with `counter()` or `distribution()`: its name, CloudWatch unit, the
names of its dimensions and one line saying what it counts. Code records by the declaration,
never by a name (`record(PURCHASES, outcome="completed")`); the exports (CloudWatch EMF in
Lambda, Prometheus text in the gateway) and the alarms read the same declarations.

Recording is an in-memory add: one dict lookup and an addition, no I/O and no lock, so it is
cheap enough for every request. Hot paths can bind a series once (`series(...)`) and skip even
the lookup. The dimensions a call names must be exactly the declared ones (a `MetricError`
otherwise, whatever the values): checking costs a length comparison and the lookup the key
needs anyway. Dimension values are strings from small fixed sets (a route group, a status
class, an outcome code, a breaker's name), never ids or user input, so each metric has few
series.

Each series keeps its running totals for the life of the process (what `count` and the
Prometheus export read) and what was recorded since the last `drain_pending` (what the EMF
export writes once per invocation). A distribution keeps its observations since the last drain
up to `MAX_PENDING_VALUES` (the most values one EMF metric may carry), plus a count, a sum and
cumulative bucket counts for ever.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from typing import Literal

from edgemart.errors import EdgemartError

Kind = Literal["counter", "distribution"]
Unit = Literal["Count", "Milliseconds", "Seconds"]
"""CloudWatch unit names."""

MAX_PENDING_VALUES = 100
"""Observations of one distribution series kept between drains: EMF's limit per metric."""

LATENCY_BUCKETS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
RESERVED = frozenset({"service"})
"""Dimension names the exports add themselves (Powertools adds `service` to every metric)."""


class MetricError(EdgemartError):
    """A metric declared twice or badly, or recorded with dimensions it does not declare."""


def _no_dimensions(dimensions: Mapping[str, str]) -> tuple[()]:
    return ()


class Metric:
    """One declared metric. Compared and hashed by identity: a declaration is one object.
    (A plain class rather than a frozen dataclass: making one costs every cold start about
    half a millisecond.)"""

    __slots__ = ("name", "kind", "unit", "dimensions", "doc", "buckets", "gateway_only", "_key_of")

    def __init__(
        self,
        name: str,
        kind: Kind,
        unit: Unit,
        dimensions: tuple[str, ...],
        doc: str,
        buckets: tuple[float, ...] = (),
        *,
        gateway_only: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self.unit = unit
        self.dimensions = dimensions
        self.doc = doc
        self.buckets = buckets
        """Upper bounds of a distribution's histogram buckets (Prometheus), ascending."""
        self.gateway_only = gateway_only
        """Recorded only by the gateway (exported to Prometheus), never by a Lambda function
        (so never in CloudWatch)."""
        # The dimension values in declared order, picked in C: the key of a series.
        self._key_of: Callable[[Mapping[str, str]], object] = (
            itemgetter(*dimensions) if dimensions else _no_dimensions
        )

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self.kind!r}, {self.unit!r}, {self.dimensions!r})"

    def key(self, dimensions: Mapping[str, str]) -> object:
        """The series key of these dimension values; MetricError unless they name exactly
        the declared dimensions."""
        if len(dimensions) != len(self.dimensions):
            raise self._wrong_dimensions(dimensions)
        try:
            return self._key_of(dimensions)
        except KeyError:
            raise self._wrong_dimensions(dimensions) from None

    def _wrong_dimensions(self, dimensions: Mapping[str, str]) -> MetricError:
        return MetricError(
            f"metric {self.name} has dimensions {list(self.dimensions)}, "
            f"recorded with {sorted(dimensions)}"
        )


class MetricTable(Mapping[str, Metric]):
    """Declared metrics by name, in declaration order. `TABLE` is edgemart's; tests make
    their own."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def __getitem__(self, name: str) -> Metric:
        return self._metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)

    def counter(
        self,
        name: str,
        doc: str,
        *,
        unit: Unit = "Count",
        dimensions: tuple[str, ...] = (),
        gateway_only: bool = False,
    ) -> Metric:
        """Declare a metric whose recorded values add up (events, or seconds spent)."""
        return self._declare(
            Metric(name, "counter", unit, dimensions, doc, gateway_only=gateway_only)
        )

    def distribution(
        self,
        name: str,
        doc: str,
        *,
        unit: Unit,
        buckets: tuple[float, ...],
        dimensions: tuple[str, ...] = (),
    ) -> Metric:
        """Declare a metric whose every observation counts (latency): percentiles in
        CloudWatch, a histogram in Prometheus."""
        return self._declare(Metric(name, "distribution", unit, dimensions, doc, buckets))

    def _declare(self, metric: Metric) -> Metric:
        names = (metric.name, *metric.dimensions)
        wrong = [name for name in names if not _SNAKE_CASE.fullmatch(name) or name in RESERVED]
        if wrong:
            raise MetricError(f"metric {metric.name}: not a snake_case name of ours: {wrong}")
        if metric.name in self._metrics:
            raise MetricError(f"metric {metric.name} is declared twice")
        if len(set(metric.dimensions)) != len(metric.dimensions):
            raise MetricError(f"metric {metric.name} names a dimension twice")
        if metric.kind == "distribution" and (
            not metric.buckets or list(metric.buckets) != sorted(set(metric.buckets))
        ):
            raise MetricError(f"metric {metric.name}: buckets must be given, ascending")
        self._metrics[metric.name] = metric
        return metric


TABLE = MetricTable()
"""Every metric edgemart records."""
counter = TABLE.counter
distribution = TABLE.distribution


# ---- The table ----

# Requests (recorded once per HTTP request by edgemart.requestmetrics)
REQUESTS = counter(
    "requests",
    "HTTP requests answered, by route group and status class (2xx ... 5xx)",
    dimensions=("route_group", "status_class"),
)
REQUEST_LATENCY = distribution(
    "request_latency",
    "Time from a request's arrival to its response's end, in the function",
    unit="Milliseconds",
    buckets=LATENCY_BUCKETS_MS,
    dimensions=("route_group",),
)
RATE_LIMITED_REQUESTS = counter(
    "rate_limited_requests",
    "Requests refused with 429 by the rate limiter",
    dimensions=("route_group",),
)
RATE_LIMIT_FALLBACKS = counter(
    "rate_limit_fallbacks",
    "Requests checked by the local limiter because the shared backend failed or was skipped",
    dimensions=("backend",),
)

# Caches: `layer` is l1 (this process) or l2 (the fleet's shared cache in Redis).
CACHE_LOOKUPS = counter(
    "cache_lookups",
    "Cached-route lookups by layer and result: in l1 hit (fresh copy), miss (looked further), "
    "stale (last good copy served while the database is unavailable or another process "
    "renders); in l2 hit, miss, unavailable (Redis failed or is left alone after a failure)",
    dimensions=("layer", "cache_rule", "result"),
)
CACHE_FILLS = counter(
    "cache_fills",
    "Shared-cache misses by how they were filled: rendered (this process held the fill lock), "
    "took_over (the holder's lock expired), waited (another process's copy arrived), stale "
    "(own last good copy served meanwhile), timed_out (rendered after the bounded wait), "
    "refused (a write came during the render: not stored)",
    dimensions=("cache_rule", "outcome"),
)
SHARED_CACHE_ERRORS = counter(
    "shared_cache_errors",
    "Shared-cache Redis operations that failed or timed out (lookup, store, release, drop, "
    "subscribe); the process then serves from its own cache and the database",
    dimensions=("operation",),
)
INVALIDATIONS_SENT = counter(
    "invalidations_sent",
    "Cache invalidations a committed write sent (one per write's set of changes), by transport: "
    "local (this process's cache) or redis (the shared cache and every other process)",
    dimensions=("transport",),
)
INVALIDATIONS_RECEIVED = counter(
    "invalidations_received",
    "Cache invalidations applied to this process's cache, by transport (local: its own writes)",
    dimensions=("transport",),
)
LIVE_MESSAGES_SENT = counter(
    "live_messages_sent",
    "Live-update frames a gateway process wrote to its WebSockets (state, changes, pongs, errors)",
    gateway_only=True,
)
LIVE_SLOW_CLIENTS_CLOSED = counter(
    "live_slow_clients_closed",
    "WebSockets closed with 1013 because their client read so slowly their send queue filled",
    gateway_only=True,
)
LIVE_POSTS = counter(
    "live_posts",
    "Live-update frames posted through the API Gateway Management API, by outcome: sent, "
    "gone (the connection was deleted) or failed",
    dimensions=("outcome",),
)
EDGE_PURGES = counter(
    "edge_purges",
    "Requests dropping pages at the edge (a Varnish BAN per tag or prefix, a CloudFront "
    "CreateInvalidation per batch), by backend and result: ok, throttled (tried again after "
    "a back-off while that can still matter), failed",
    dimensions=("backend", "result"),
)
EDGE_PURGE_LAG = distribution(
    "edge_purge_lag",
    "Time from a write's purge being queued to the edge accepting it",
    unit="Milliseconds",
    buckets=LATENCY_BUCKETS_MS,
    dimensions=("backend",),
)

# Database resilience
DB_RETRIES = counter(
    "db_retries",
    "Database operations retried after a transient failure (one per retry)",
)
CIRCUIT_STATE_CHANGES = counter(
    "circuit_state_changes",
    "Circuit breaker transitions, by breaker and the state entered (open, half_open, closed)",
    dimensions=("breaker", "state"),
)
CIRCUIT_OPEN_TIME = counter(
    "circuit_open_time",
    "Time a circuit breaker spent open, recorded when it leaves the open state",
    unit="Seconds",
    dimensions=("breaker",),
)

# Read replica (edgemart.readrouting; recorded only when DATABASE_REPLICA_URL is set)
READ_ROUTES = counter(
    "read_routes",
    "Public-page loads from the database (cache misses) by where they went: replica, or the "
    "primary because the replica was lagging, down, not measured lately (unchecked), a write "
    "was recent (after_write), or it could not be reached for this load (failover)",
    dimensions=("route",),
)
REPLICA_TRANSITIONS = counter(
    "replica_transitions",
    "Read-replica routing changes, by the state entered: replica (public reads use it), "
    "lagging or down (they go to the primary)",
    dimensions=("entered",),
)

# Purchases
PURCHASES = counter(
    "purchases",
    "Purchase attempts by outcome: completed, queued, or the refusal's problem code",
    dimensions=("outcome",),
)
QUEUED_ORDERS = counter(
    "queued_orders",
    "Queued orders the order worker handled: completed, its failure code, or retry "
    "(returned to the queue)",
    dimensions=("outcome",),
)

# Listing scoring
LISTINGS_SCORED = counter(
    "listings_scored",
    "Listings given a score, by the scorer that gave it (model or heuristic)",
    dimensions=("scorer",),
)
SCORING_FALLBACKS = counter(
    "scoring_fallbacks",
    "Listings given the fallback score after their scoring attempts were used up",
)
SCORING_FAILURES = counter(
    "scoring_failures",
    "Listings whose scoring failed this run (released for another attempt)",
)
SCORING_MODEL_UNAVAILABLE = counter(
    "scoring_model_unavailable",
    "Runs that could not load the scoring model and used the heuristic scorer",
)

# Buffered counters and the refresh job
COUNTER_FALLBACKS = counter(
    "counter_fallbacks",
    "Buffered entries kept in this process because writing them to Redis failed or was skipped",
    dimensions=("buffer",),
)
COUNTER_ENTRIES_DROPPED = counter(
    "counter_entries_dropped",
    "Buffered entries dropped: unreadable, failing their check, refused, or past the cap",
    dimensions=("buffer",),
)
REFRESH_VIEWS_STEP_FAILURES = counter(
    "refresh_views_step_failures",
    "refresh_views steps that failed (the other steps still ran)",
    dimensions=("step",),
)

# The gateway's scheduler (gateway.leadership): one leader per fleet, holding a lease
LEADERSHIP_CHANGES = counter(
    "leadership_changes",
    "This process became the holder of a lease (acquired), stopped holding it because a "
    "renewal did not succeed in time (lost), or gave it up as it stopped (released)",
    dimensions=("lease", "change"),
    gateway_only=True,
)
LEADER_TIME = counter(
    "leader_time",
    "Time this process held a lease and did its holder's work: its rate is 1 in the leader "
    "and 0 elsewhere, and summed over the fleet it is 1 while some process leads",
    unit="Seconds",
    dimensions=("lease",),
    gateway_only=True,
)

# Lambda
COLD_STARTS = counter(
    "cold_starts",
    "First invocations of a Lambda execution environment",
    dimensions=("function",),
)


# ---- Series: what this process recorded ----


class Series:
    """One metric with one set of dimension values."""

    __slots__ = ("metric", "dimensions", "total")

    def __init__(self, metric: Metric, dimensions: Mapping[str, str]) -> None:
        self.metric = metric
        self.dimensions: Mapping[str, str] = dict(dimensions)
        self.total = 0.0
        """Sum of every recorded value since the process started."""

    def add(self, value: float = 1) -> None:
        raise NotImplementedError

    def take_pending(self) -> list[float]:
        """What was recorded since the last call, as EMF values; marks it taken."""
        raise NotImplementedError


class CounterSeries(Series):
    __slots__ = ("_taken",)

    def __init__(self, metric: Metric, dimensions: Mapping[str, str]) -> None:
        super().__init__(metric, dimensions)
        self._taken = 0.0

    def add(self, value: float = 1) -> None:
        self.total += value

    def take_pending(self) -> list[float]:
        pending = self.total - self._taken
        self._taken = self.total
        return [pending] if pending else []


class DistributionSeries(Series):
    __slots__ = ("count", "bucket_counts", "_pending")

    def __init__(self, metric: Metric, dimensions: Mapping[str, str]) -> None:
        super().__init__(metric, dimensions)
        self.count = 0
        self.bucket_counts = [0] * (len(metric.buckets) + 1)
        """Observations per bucket (not cumulative); the last is above every bound."""
        self._pending: list[float] = []

    def add(self, value: float = 1) -> None:
        self.count += 1
        self.total += value
        self.bucket_counts[bisect_left(self.metric.buckets, value)] += 1
        if len(self._pending) < MAX_PENDING_VALUES:
            self._pending.append(value)

    def take_pending(self) -> list[float]:
        pending, self._pending = self._pending, []
        return pending


class Pending:
    """What one series recorded since the last drain: a counter's sum, a distribution's
    observations."""

    __slots__ = ("metric", "dimensions", "values")

    def __init__(self, metric: Metric, dimensions: Mapping[str, str], values: list[float]) -> None:
        self.metric = metric
        self.dimensions = dimensions
        self.values = values


class Registry:
    """The series one process recorded. Code records into the process's registry through
    the module's functions (`record`, `series`, `count`, ...); tests may make their own."""

    def __init__(self) -> None:
        self._series: dict[tuple[Metric, object], Series] = {}

    def series(self, metric: Metric, /, **dimensions: str) -> Series:
        """The series of `metric` with these dimension values (created on first use). A hot
        path may keep it and call `add` on it directly."""
        key = (metric, metric.key(dimensions))
        found = self._series.get(key)
        if found is None:
            found = self._new_series(key, metric, dimensions)
        return found

    def record(self, metric: Metric, value: float = 1, /, **dimensions: str) -> None:
        """Add `value` to a counter, or observe it in a distribution."""
        key = (metric, metric.key(dimensions))
        found = self._series.get(key)
        if found is None:
            found = self._new_series(key, metric, dimensions)
        found.add(value)

    def _new_series(
        self, key: tuple[Metric, object], metric: Metric, dimensions: Mapping[str, str]
    ) -> Series:
        wrong = [
            name for name, value in dimensions.items() if not isinstance(value, str) or not value
        ]
        if wrong:
            raise MetricError(f"metric {metric.name}: dimensions {wrong} need non-empty strings")
        made: Series = (
            CounterSeries(metric, dimensions)
            if metric.kind == "counter"
            else DistributionSeries(metric, dimensions)
        )
        self._series[key] = made
        return made

    def all_series(self) -> list[Series]:
        """Every series, in the order they were first recorded."""
        return list(self._series.values())

    def count(self, metric: Metric, /, **dimensions: str) -> float:
        """The total recorded in `metric` over the series matching the given dimension
        values (every series when none is given); for a distribution, its number of
        observations."""
        unknown = dimensions.keys() - set(metric.dimensions)
        if unknown:
            raise MetricError(f"metric {metric.name} has no dimensions {sorted(unknown)}")
        total = 0.0
        for found in self.all_series():
            if found.metric is not metric:
                continue
            if all(found.dimensions[name] == value for name, value in dimensions.items()):
                total += found.count if isinstance(found, DistributionSeries) else found.total
        return total

    def drain_pending(self) -> list[Pending]:
        """Everything recorded since the last drain, by series (series with nothing new left
        out), now marked drained: the EMF export calls this once per invocation."""
        drained = []
        for found in self.all_series():
            values = found.take_pending()
            if values:
                drained.append(Pending(found.metric, found.dimensions, values))
        return drained


REGISTRY = Registry()
"""This process's series."""
series = REGISTRY.series
record = REGISTRY.record
count = REGISTRY.count
all_series = REGISTRY.all_series
drain_pending = REGISTRY.drain_pending
