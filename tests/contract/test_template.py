"""template.yaml against the code: routes, functions, schedules and CloudFront cache policies
agree with the route table, the gateway, the cache rules and docs/architecture.md; the
functions that write purge the edge; cfn-lint and `sam validate --lint` pass."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route, WebSocketRoute

from edgemart.cache import CACHE_RULES, CDN_HOST_HEADER, TAGS_HEADER, TENANT_HEADER, CacheRule
from edgemart.changes import listing_changed
from edgemart.edgepurge import cloudfront_paths, edge_ttl
from edgemart.routetable import ROUTES
from edgemart.settings import Settings
from gateway.app import HTTP_FUNCTION_MODULES
from gateway.scheduler import default_schedules

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "template.yaml"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # AWS managed policy
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"  # AWS managed policy
SCHEDULE_RATES_S = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86_400}


class TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: `!Ref X` becomes {"Ref": X}, `!Sub s` becomes
    {"Fn::Sub": s}, and so on."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


TemplateLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=TemplateLoader)  # noqa: S506
    return loaded


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def function_folder(properties: dict[str, Any]) -> str:
    match = re.fullmatch(r"functions/(\w+)/", properties["CodeUri"])
    assert match, properties["CodeUri"]
    return match[1]


def test_one_function_per_folder(template: dict[str, Any]) -> None:
    folders = {p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file()}
    declared = [
        function_folder(p) for p in resources(template, "AWS::Serverless::Function").values()
    ]
    assert sorted(declared) == sorted(folders)


def test_http_events_are_the_route_table(template: dict[str, Any]) -> None:
    """Every HTTP route of the table has its event on its own function, and no event is extra
    (the WebSocket route is the WebSocket API's: tests/contract/test_realtime_template.py)."""
    in_table: dict[str, set[tuple[str, str]]] = {}
    for route in ROUTES:
        if route.websocket:
            continue
        in_table.setdefault(route.function, set()).add((route.method, route.path))
    in_template: dict[str, set[tuple[str, str]]] = {}
    for properties in resources(template, "AWS::Serverless::Function").values():
        events = {
            (event["Properties"]["Method"], event["Properties"]["Path"])
            for event in properties.get("Events", {}).values()
            if event["Type"] == "HttpApi"
        }
        if events:
            in_template[function_folder(properties)] = events
    assert in_template == in_table


@pytest.mark.parametrize("module", HTTP_FUNCTION_MODULES)
def test_each_function_serves_its_table_routes(module: str) -> None:
    function = module.split(".")[1]
    in_code = {
        (method, route.path)
        for route in importlib.import_module(module).routes
        if isinstance(route, Route)
        for method in (route.methods or ()) - {"HEAD"}
    } | {
        ("GET", route.path)  # a WebSocket upgrade is a GET
        for route in importlib.import_module(module).routes
        if isinstance(route, WebSocketRoute)
    }
    assert in_code == {(r.method, r.path) for r in ROUTES if r.function == function}


def test_schedules_match_architecture_doc_and_gateway(template: dict[str, Any]) -> None:
    in_template = {}
    for properties in resources(template, "AWS::Serverless::Function").values():
        for event in properties.get("Events", {}).values():
            if event["Type"] in ("Schedule", "ScheduleV2"):
                match = re.fullmatch(
                    r"rate\((\d+) (\w+)\)", event["Properties"]["ScheduleExpression"]
                )
                assert match
                in_template[function_folder(properties)] = (
                    int(match[1]) * SCHEDULE_RATES_S[match[2]]
                )
    in_gateway = {s.name: s.every_s for s in default_schedules() if s.name != "heartbeat"}
    assert in_template == in_gateway
    # docs/architecture.md lists each schedule as `- **name** (every ...`.
    architecture = ARCHITECTURE.read_text()
    words = {60: "every minute", 300: "every 5 min", 86_400: "daily"}
    for name, every_s in in_template.items():
        assert f"- **{name}** ({words[int(every_s)]}" in architecture, name


def behaviours(template: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (distribution,) = resources(template, "AWS::CloudFront::Distribution").values()
    config = distribution["DistributionConfig"]
    return config["DefaultCacheBehavior"], config["CacheBehaviors"]


def behaviour_for(template: dict[str, Any], path: str) -> dict[str, Any]:
    """The first cache behaviour whose pattern matches `path`, as CloudFront picks it."""
    default, ordered = behaviours(template)
    for behaviour in ordered:
        pattern = re.escape(behaviour["PathPattern"]).replace(r"\*", ".*").replace(r"\?", ".")
        if re.fullmatch(pattern, path):
            return behaviour
    return default


def sample_path(route: str) -> str:
    """`GET /products/{id}` -> `/products/sample`."""
    return re.sub(r"\{\w+\}", "sample", route.split(" ", 1)[1])


@pytest.mark.parametrize("rule", CACHE_RULES.values(), ids=lambda rule: rule.name)
def test_cache_policy_equals_its_rule(template: dict[str, Any], rule: CacheRule) -> None:
    policies = resources(template, "AWS::CloudFront::CachePolicy")
    for route in rule.routes:
        behaviour = behaviour_for(template, sample_path(route))
        reference = behaviour["CachePolicyId"]
        assert isinstance(reference, dict), f"{route} is not cached by its own policy"
        config = policies[reference["Ref"]]["CachePolicyConfig"]
        assert (config["MinTTL"], config["DefaultTTL"], config["MaxTTL"]) == (
            0,
            edge_ttl(rule),
            edge_ttl(rule),
        )
        assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "EdgeResponseHeadersPolicy"}
        key = config["ParametersInCacheKeyAndForwardedToOrigin"]
        # Keyed on the tenant's host too (decision 0043), never on Host itself.
        assert key["HeadersConfig"] == {
            "HeaderBehavior": "whitelist",
            "Headers": [*rule.key_headers, CDN_HOST_HEADER],
        }
        assert key["CookiesConfig"] == {"CookieBehavior": "none"}
        queries = key["QueryStringsConfig"]
        if rule.query_params is None:
            assert queries == {"QueryStringBehavior": "all"}
        elif not rule.query_params:
            assert queries == {"QueryStringBehavior": "none"}
        else:
            assert queries["QueryStringBehavior"] == "whitelist"
            assert sorted(queries["QueryStrings"]) == sorted(rule.query_params)


def test_every_invalidation_path_names_pages_cloudfront_caches(template: dict[str, Any]) -> None:
    changes = listing_changed("5b17b966-2f07-43c8-86bb-e9e870ef55b1", "shop")
    for path in cloudfront_paths(changes):
        behaviour = behaviour_for(template, path.removesuffix("*"))
        assert behaviour["CachePolicyId"] != CACHING_DISABLED, path


def test_viewers_never_see_the_tags_or_tenant_headers(template: dict[str, Any]) -> None:
    (policy,) = resources(template, "AWS::CloudFront::ResponseHeadersPolicy").values()
    removed = policy["ResponseHeadersPolicyConfig"]["RemoveHeadersConfig"]["Items"]
    assert removed == [{"Header": TAGS_HEADER}, {"Header": TENANT_HEADER}]


def test_every_behaviour_hands_the_viewers_host_to_the_cache_key_and_origin(
    template: dict[str, Any],
) -> None:
    """The viewer-request function copies Host into CDN_HOST_HEADER on every behaviour: the
    cached ones key on it, the others forward it (all viewer headers but Host)."""
    (function,) = resources(template, "AWS::CloudFront::Function").values()
    code = function["FunctionCode"]
    assert f"request.headers['{CDN_HOST_HEADER.lower()}']" in code
    assert "request.headers.host" in code
    default, ordered = behaviours(template)
    for behaviour in [default, *ordered]:
        (association,) = behaviour["FunctionAssociations"]
        assert association["EventType"] == "viewer-request"
        assert association["FunctionARN"] == {
            "Fn::GetAtt": "ViewerHostFunction.FunctionMetadata.FunctionARN"
        }
        if behaviour["CachePolicyId"] == CACHING_DISABLED:
            assert behaviour["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST


def writers() -> set[str]:
    """The functions that hand a committed write's `Changes` to `Services.invalidate`."""
    return {
        app.parent.name
        for app in (ROOT / "functions").glob("*/app.py")
        if "services.invalidate(" in app.read_text()
    }


def test_the_functions_that_write_purge_the_edge(template: dict[str, Any]) -> None:
    """Each writer has EDGE_PURGE from the parameter and may read the parameter naming the
    distribution; their roles, and only theirs, may invalidate that distribution."""
    purging, reading = set(), set()
    parameter = template["Globals"]["Function"]["Environment"]["Variables"][
        "CLOUDFRONT_DISTRIBUTION_PARAMETER"
    ]["Fn::Sub"]
    for properties in resources(template, "AWS::Serverless::Function").values():
        variables = properties.get("Environment", {}).get("Variables", {})
        if variables.get("EDGE_PURGE") == {"Ref": "EdgePurge"}:
            purging.add(function_folder(properties))
        for policy in properties.get("Policies", []):
            if isinstance(policy, dict) and "SSMParameterReadPolicy" in policy:
                name_sub = policy["SSMParameterReadPolicy"]["ParameterName"]["Fn::Sub"]
                assert "/" + name_sub == parameter  # the policy template adds the slash
                reading.add(function_folder(properties))
    assert purging == reading == writers()

    (stored,) = resources(template, "AWS::SSM::Parameter").values()
    assert stored == {
        "Name": {"Fn::Sub": parameter},
        "Type": "String",
        "Value": {"Ref": "Distribution"},
        "Description": stored["Description"],
    }
    (policy,) = resources(template, "AWS::IAM::Policy").values()
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "cloudfront:CreateInvalidation"
    assert statement["Resource"]["Fn::Sub"].endswith(":distribution/${Distribution}")
    granted = {role["Ref"].removesuffix("Role") for role in policy["Roles"]}
    functions = resources(template, "AWS::Serverless::Function")
    assert {function_folder(functions[name]) for name in granted} == writers()
    edge_purge = template["Parameters"]["EdgePurge"]
    assert Settings.from_env({"EDGE_PURGE": edge_purge["Default"]}).edge_purge == "cloudfront"
    for value in edge_purge["AllowedValues"]:
        Settings.from_env({"EDGE_PURGE": value})


def test_uncached_routes_are_never_cached_at_the_edge(template: dict[str, Any]) -> None:
    for route in ROUTES:
        if route.method != "GET" or route.cache_rule is not None:
            continue  # CloudFront never caches other methods
        behaviour = behaviour_for(template, sample_path(route.label))
        assert behaviour["CachePolicyId"] == CACHING_DISABLED, route.label


def test_every_write_reaches_the_origin_with_its_token(template: dict[str, Any]) -> None:
    """Writes carry a JWT. CloudFront forwards Authorization only in a cache key, or with
    caching disabled and an all-viewer origin request policy."""
    policies = resources(template, "AWS::CloudFront::CachePolicy")
    for route in ROUTES:
        if route.method == "GET":
            continue
        behaviour = behaviour_for(template, sample_path(route.label))
        assert route.method in behaviour["AllowedMethods"], route.label
        reference = behaviour["CachePolicyId"]
        if reference == CACHING_DISABLED:
            assert behaviour["OriginRequestPolicyId"], route.label
            continue
        config = policies[reference["Ref"]]["CachePolicyConfig"]
        headers = config["ParametersInCacheKeyAndForwardedToOrigin"]["HeadersConfig"]
        assert "Authorization" in headers.get("Headers", []), route.label


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(command[0], path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail(f"{command[0]} is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run(
        [executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, env=env
    )


def test_tracing_follows_the_template(template: dict[str, Any]) -> None:
    """Every function runs with X-Ray's active tracing and `TRACING=xray`, or none does: the
    spans need the segment and daemon Lambda provides, and Lambda's segment alone would show
    none of the statements. No function sets either on its own, nor a role of its own: SAM
    gives the X-Ray write policy only to the roles it makes."""
    function = template["Globals"]["Function"]
    variables = function["Environment"]["Variables"]
    active = function.get("Tracing") == "Active"
    tracing = Settings.from_env({"TRACING": variables.get("TRACING", "")}).tracing
    assert tracing == ("xray" if active else "off")
    for name, properties in resources(template, "AWS::Serverless::Function").items():
        assert "Tracing" not in properties, name
        assert "Role" not in properties, name
        assert "TRACING" not in properties.get("Environment", {}).get("Variables", {}), name


def test_cfn_lint_is_clean() -> None:
    result = run_tool("cfn-lint", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint() -> None:
    result = run_tool("sam", "validate", "--lint", "--region", "us-east-1")
    assert result.returncode == 0, result.stdout + result.stderr
