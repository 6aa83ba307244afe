"""template.yaml's alarms and dashboard against the metrics table (edgemart/metrics.py).

Every metric they read in the functions' namespace is declared, with exactly its declared
dimensions plus the ones the export adds (`service`), since CloudWatch tells series apart by
their whole set of dimensions; the namespace is the one the functions are given; every
dimension value they name is one the code emits; every route group has its 5xx and latency
alarms; the dashboard shows every alarm and every declared metric a Lambda function records
(not the gateway-only ones, which never reach CloudWatch).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from edgemart import metrics
from edgemart.breaker import State
from edgemart.db import Database
from edgemart.edgepurge import CloudFrontPurge, VarnishPurge
from edgemart.metrics import TABLE
from edgemart.routetable import ROUTES
from edgemart.scoring.model import HeuristicScorer, OnnxListingScorer
from edgemart.settings import DECLARED, Settings
from tests.contract.test_template import TEMPLATE, TemplateLoader, resources

NAMESPACE_PARAMETER = "MetricsNamespace"
OURS = "<MetricsNamespace>"
"""The namespace of a series read from the functions' namespace parameter."""
SERVICE_VARIABLE = "METRICS_SERVICE"  # the setting edgemart.emf names `service` after
ALARM = "AWS::CloudWatch::Alarm"
DASHBOARD = "AWS::CloudWatch::Dashboard"

# A route's group: its rate-limit group, else its function (what `requests` is recorded by).
# The WebSocket upgrade records no `requests` (the request context serves HTTP only).
ROUTE_GROUPS = frozenset(
    route.rate_limit or route.function for route in ROUTES if not route.websocket
)
PURCHASE_ROUTE = next(route for route in ROUTES if route.label == "POST /purchases")
# The purchase function records completed, queued, replayed or the refusal's problem code,
# and two outcomes its answers name otherwise: circuit_open (503 read_only_mode without trying
# the database) and queue_unavailable (503 service_unavailable).
PURCHASE_OUTCOMES = frozenset(
    {"completed", "queued", "replayed", "circuit_open", "queue_unavailable"}.union(
        *PURCHASE_ROUTE.problems.values()
    )
)
_SETTINGS = Settings()
DIMENSION_VALUES: dict[str, frozenset[str]] = {
    "route_group": ROUTE_GROUPS,
    "status_class": frozenset(f"{digit}xx" for digit in range(1, 6)),
    "breaker": frozenset(
        database.breaker.name
        for database in (Database.primary_from(_SETTINGS), Database.replica_from(_SETTINGS))
        if database.breaker is not None
    ),
    "state": frozenset(typing.get_args(State)),
    "scorer": frozenset({HeuristicScorer.source, OnnxListingScorer.source}),
    "outcome": PURCHASE_OUTCOMES,
    # Named by the edge purge graphs; the rate limiter's backends are only ever grouped by.
    "backend": frozenset({CloudFrontPurge.backend, VarnishPurge.backend}),
}
"""The values the code records, for each dimension the template names a value of."""


@dataclass(frozen=True)
class Series:
    """A metric an alarm or a dashboard graph reads. A dimension whose value is None is one a
    Metrics Insights query sums or groups over."""

    where: str
    namespace: str
    name: str
    dimensions: dict[str, str | None]
    stat: str | None = None


# ---- Reading the template ----


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=TemplateLoader)  # noqa: S506
    return loaded


def namespace_of(value: Any) -> str:
    if value == {"Ref": NAMESPACE_PARAMETER}:
        return OURS
    return value if isinstance(value, str) else repr(value)


def dimensions_of(listed: list[dict[str, Any]]) -> dict[str, str | None]:
    return {
        d["Name"]: d["Value"] if isinstance(d["Value"], str) else repr(d["Value"]) for d in listed
    }


_INSIGHTS_QUERY = re.compile(
    r"SELECT (?P<function>SUM|AVG|MIN|MAX|COUNT)\((?P<metric>\w+)\)"
    r" FROM SCHEMA\((?P<schema>[^)]*)\)"
    r"(?: WHERE (?P<where>.+?))?"
    r"(?: GROUP BY (?P<group_by>\w+(?:, \w+)*))?"
)
_CONDITION = re.compile(r"(?P<dimension>\w+) = '(?P<value>[^']*)'")


def insights_series(where: str, query: str) -> Series:
    """The series of a Metrics Insights query: SCHEMA names the namespace and every dimension
    of the metrics it reads; WHERE fixes values, GROUP BY splits by dimensions."""
    match = _INSIGHTS_QUERY.fullmatch(query)
    assert match, f"{where}: a Metrics Insights query this test cannot read: {query}"
    namespace, *names = (part.strip() for part in match["schema"].split(","))
    dimensions: dict[str, str | None] = dict.fromkeys(names)
    for condition in match["where"].split(" AND ") if match["where"] else []:
        fixed = _CONDITION.fullmatch(condition.strip())
        assert fixed, f"{where}: a condition this test cannot read: {condition}"
        assert fixed["dimension"] in dimensions, f"{where}: WHERE on {fixed['dimension']}"
        dimensions[fixed["dimension"]] = fixed["value"]
    for grouped in match["group_by"].split(", ") if match["group_by"] else []:
        assert grouped in dimensions, f"{where}: GROUP BY {grouped}, not in SCHEMA"
    return Series(where, namespace.strip('"'), match["metric"], dimensions, match["function"])


def alarm_series(name: str, alarm: dict[str, Any]) -> Iterator[Series]:
    where = f"alarm {name}"
    if "MetricName" in alarm:
        yield Series(
            where,
            namespace_of(alarm["Namespace"]),
            alarm["MetricName"],
            dimensions_of(alarm.get("Dimensions", [])),
            alarm.get("ExtendedStatistic") or alarm.get("Statistic"),
        )
    for query in alarm.get("Metrics", []):
        if "MetricStat" in query:
            stat = query["MetricStat"]
            metric = stat["Metric"]
            yield Series(
                f"{where} ({query['Id']})",
                namespace_of(metric["Namespace"]),
                metric["MetricName"],
                dimensions_of(metric.get("Dimensions", [])),
                stat["Stat"],
            )
        elif query["Expression"].startswith("SELECT"):
            yield insights_series(f"{where} ({query['Id']})", query["Expression"])


def dashboard_body(template: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's JSON with its `${...}` filled in: the namespace parameter as OURS,
    other parameters by their defaults, `${Resource.Attribute}` as that text."""
    text = properties["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str), "DashboardBody: !Sub of one JSON string"
    parameters = template["Parameters"]

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        if name == NAMESPACE_PARAMETER:
            return OURS
        if name == "AWS::Region":
            return "us-east-1"
        if name in parameters:
            return str(parameters[name]["Default"])
        resource = name.split(".")[0]
        assert resource in template["Resources"], f"dashboard: ${{{name}}} names no resource"
        return name

    body: dict[str, Any] = json.loads(re.sub(r"\$\{([^}!]+)\}", fill, text))
    return body


def widget_series(widget: dict[str, Any]) -> Iterator[Series]:
    properties = widget["properties"]
    where = f"dashboard graph {properties.get('title')!r}"
    for entry in properties.get("metrics", []):
        if isinstance(entry[0], dict):
            yield insights_series(where, entry[0]["expression"])
            continue
        options = entry[-1] if isinstance(entry[-1], dict) else {}
        namespace, name, *pairs = entry[:-1] if options else entry
        assert len(pairs) % 2 == 0, f"{where}: dimension names and values come in pairs"
        dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
        yield Series(
            where, namespace, name, dimensions, options.get("stat", properties.get("stat"))
        )


def dashboard_alarms(widget: dict[str, Any]) -> set[str]:
    """The alarms a widget shows, by logical id (`${Alarm.Arn}` in the template)."""
    properties = widget["properties"]
    arns = [*properties.get("alarms", []), *properties.get("annotations", {}).get("alarms", [])]
    assert all(arn.endswith(".Arn") for arn in arns), arns
    return {arn.removesuffix(".Arn") for arn in arns}


def widgets(template: dict[str, Any]) -> list[dict[str, Any]]:
    (dashboard,) = resources(template, DASHBOARD).values()
    found: list[dict[str, Any]] = dashboard_body(template, dashboard)["widgets"]
    return found


def all_series(template: dict[str, Any]) -> list[Series]:
    found = [s for name, a in resources(template, ALARM).items() for s in alarm_series(name, a)]
    return found + [s for widget in widgets(template) for s in widget_series(widget)]


# ---- The rules ----


def problems_of(series: Series, service: str) -> list[str]:
    """What is wrong with one series: an undeclared metric, other dimensions than the ones
    its EMF carries, a namespace that is neither the functions' nor AWS's, a value the code
    never records."""
    if series.namespace.startswith("AWS/"):
        return []
    if series.namespace != OURS:
        return [f"{series.where}: namespace {series.namespace}, not !Ref {NAMESPACE_PARAMETER}"]
    declared = TABLE.get(series.name)
    if declared is None:
        return [f"{series.where}: metric {series.name} is not declared in edgemart/metrics.py"]
    problems = []
    emitted = {*declared.dimensions, *metrics.RESERVED}
    if set(series.dimensions) != emitted:
        problems.append(
            f"{series.where}: {series.name} with dimensions {sorted(series.dimensions)}, "
            f"emitted with {sorted(emitted)}"
        )
    for dimension, value in series.dimensions.items():
        if value is None:
            continue
        if dimension == "service":
            known: frozenset[str] | None = frozenset({service})
        else:
            known = DIMENSION_VALUES.get(dimension)
        if known is None:
            problems.append(f"{series.where}: no known values of {dimension} (DIMENSION_VALUES)")
        elif value not in known:
            problems.append(f"{series.where}: {dimension}={value} is never recorded")
    return problems


def functions_variable(template: dict[str, Any], name: str) -> Any:
    """A variable every function gets from Globals, which no function overrides."""
    for function, properties in resources(template, "AWS::Serverless::Function").items():
        overrides = properties.get("Environment", {}).get("Variables", {})
        assert name not in overrides, f"{function} sets its own {name}"
    return template["Globals"]["Function"]["Environment"]["Variables"].get(name)


def namespace_setting() -> tuple[str, object]:
    """The variable the functions read their metrics namespace from, and its default: the
    setting that declares it, if edgemart.settings has one; else Powertools Metrics' own
    variable, whose default is the parameter's."""
    declared = [s for s in DECLARED if s.variable.endswith("METRICS_NAMESPACE")]
    if declared:
        return declared[0].variable, declared[0].default
    return "POWERTOOLS_METRICS_NAMESPACE", None


# ---- Tests ----


def test_every_series_is_a_declared_metric_with_its_dimensions(template: dict[str, Any]) -> None:
    service = functions_variable(template, SERVICE_VARIABLE)
    found = all_series(template)
    assert any(s.namespace == OURS for s in found)
    problems = [problem for s in found for problem in problems_of(s, service)]
    assert not problems, "\n".join(problems)


def test_the_rules_find_what_is_wrong() -> None:
    """The check above can fail: each kind of mistake is reported."""
    good = Series(
        "x", OURS, "requests", {"service": "edgemart", "route_group": "home", "status_class": "5xx"}
    )
    assert problems_of(good, "edgemart") == []
    mistakes = [
        Series("x", "edgemart", "requests", good.dimensions),  # a literal namespace
        Series("x", OURS, "request", good.dimensions),  # undeclared
        Series("x", OURS, "requests", {"route_group": "home", "status_class": "5xx"}),
        Series("x", OURS, "requests", {**good.dimensions, "route_group": "carts"}),
        Series("x", OURS, "requests", {**good.dimensions, "service": "home"}),
        Series(
            "x",
            OURS,
            "cache_lookups",
            {"service": "edgemart", "layer": "l1", "cache_rule": None, "result": "hit"},
        ),
    ]
    for mistake in mistakes:
        assert problems_of(mistake, "edgemart"), mistake


def test_the_functions_emit_into_the_namespace_the_alarms_read(template: dict[str, Any]) -> None:
    variable, default = namespace_setting()
    assert functions_variable(template, variable) == {"Ref": NAMESPACE_PARAMETER}
    if default is not None:
        assert template["Parameters"][NAMESPACE_PARAMETER]["Default"] == default


def test_every_route_group_has_its_5xx_and_latency_alarms(template: dict[str, Any]) -> None:
    errors, latency = set(), set()
    for name, alarm in resources(template, ALARM).items():
        for series in alarm_series(name, alarm):
            group = series.dimensions.get("route_group")
            if series.name == "requests" and series.dimensions.get("status_class") == "5xx":
                errors.add(group)
            if series.name == "request_latency" and series.stat == "p99":
                assert alarm["Threshold"] == {"Ref": "LatencyP99AlarmMs"}, name
                latency.add(group)
    assert errors == ROUTE_GROUPS
    assert latency == ROUTE_GROUPS


def test_every_alarm_notifies_the_topic(template: dict[str, Any]) -> None:
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for name, alarm in resources(template, ALARM).items():
        assert alarm["AlarmActions"] == notify, name


def test_the_dashboard_shows_every_alarm_and_every_metric(template: dict[str, Any]) -> None:
    shown = set().union(*(dashboard_alarms(widget) for widget in widgets(template)))
    assert shown == set(resources(template, ALARM))
    graphed = [s for widget in widgets(template) for s in widget_series(widget)]
    in_cloudwatch = {name for name, metric in TABLE.items() if not metric.gateway_only}
    missing = in_cloudwatch - {s.name for s in graphed}
    assert not missing, f"not on the dashboard: {sorted(missing)}"
    p99 = {
        s.dimensions["route_group"]
        for s in graphed
        if s.name == "request_latency" and s.stat == "p99"
    }
    assert p99 == ROUTE_GROUPS, "the p99 graph has one line per route group"


def test_metrics_insights_queries_are_read_or_refused() -> None:
    """The query reader finds the namespace and every dimension, and refuses what it cannot
    read rather than let a query slip past the checks."""
    read = insights_series(
        "q",
        'SELECT SUM(requests) FROM SCHEMA("<MetricsNamespace>", route_group, service, '
        "status_class) WHERE status_class = '5xx' GROUP BY route_group",
    )
    assert (read.namespace, read.name) == (OURS, "requests")
    assert read.dimensions == {"route_group": None, "service": None, "status_class": "5xx"}
    with pytest.raises(AssertionError):
        insights_series("q", "SELECT SUM(requests) FROM edgemart GROUP BY route_group")
