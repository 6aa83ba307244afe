"""The local edge's VCL is generated from the cache rules: every rule's routes, windows and
cache key appear in it, and nothing else is looked up in the cache; only purgers may BAN or
PURGE, bans take the shape edgemart.edgepurge sends, and pages showing stock are capped."""

from __future__ import annotations

import ipaddress
import re

import pytest

from edgemart.cache import CACHE_RULES, CacheRule
from edgemart.changes import listing_changed
from edgemart.edgepurge import STOCK_RULES, ban_expressions, edge_ttl
from gateway.edge import BAN_PATTERN, render_vcl, route_regex

VCL = render_vcl("127.0.0.1", 8000)


@pytest.mark.parametrize("rule", CACHE_RULES.values(), ids=lambda rule: rule.name)
def test_rule_is_in_the_vcl(rule: CacheRule) -> None:
    block = VCL[VCL.index(f'set req.http.X-Edge-Rule = "{rule.name}"') :]
    block = block[: block.index("return (hash);")]
    assert f"set req.grace = {rule.stale_while_revalidate}s;" in block
    assert ("unset req.http.Authorization;" in block) != ("Authorization" in rule.key_headers)
    grace = max(rule.stale_while_revalidate, rule.stale_if_error)
    assert (
        f'if (bereq.http.X-Edge-Rule == "{rule.name}") {{\n'
        f"        set beresp.grace = {grace}s;" in VCL
    )
    for route in rule.routes:
        assert f'req.url ~ "{route_regex(route)}"' in VCL


@pytest.mark.parametrize(
    ("path", "cached"),
    [
        ("/marketplace/home", True),
        ("/marketplace/home?x=1", True),
        ("/stores/seller-1", True),
        ("/stores/seller-1/payouts", False),
        ("/products/5b17b966-2f07-43c8-86bb-e9e870ef55b1", True),
        ("/purchases", False),
        ("/wallet", False),
        ("/health", False),
    ],
)
def test_only_rule_routes_are_looked_up(path: str, cached: bool) -> None:
    patterns = [route_regex(route) for rule in CACHE_RULES.values() for route in rule.routes]
    assert any(re.match(pattern, path) for pattern in patterns) is cached


# ---- Purging ----


def test_loopback_may_always_ban_and_purge_and_the_given_purgers_too() -> None:
    assert 'acl edge_purgers {\n    "127.0.0.1";\n    "::1";\n}' in VCL
    extra = render_vcl(
        "127.0.0.1",
        8000,
        purgers=[ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")],
    )
    assert 'acl edge_purgers {\n    "127.0.0.1";\n    "::1";\n    "10.0.0.0"/8;\n}' in extra


def test_ban_and_purge_are_refused_before_anything_else_unless_from_a_purger() -> None:
    recv = VCL[VCL.index("sub vcl_recv {") :]
    assert (
        recv.index('req.method == "BAN" || req.method == "PURGE"')
        < recv.index("if (!client.ip ~ edge_purgers) {\n            return (synth(403")
        < recv.index("call edge_ban;")
        < recv.index("req.url ~")
    )


@pytest.mark.parametrize("rule", CACHE_RULES.values(), ids=lambda rule: rule.name)
def test_a_purge_drops_the_url_as_its_rule_keys_it(rule: CacheRule) -> None:
    block = VCL[VCL.index(f'set req.http.X-Edge-Rule = "{rule.name}"') :]
    block = block[: block.index("return (hash);")]
    assert block.rstrip().endswith(
        'if (req.method == "PURGE") {\n            return (purge);\n        }'
    )


def test_every_ban_edgemart_sends_is_one_the_edge_takes() -> None:
    changes = listing_changed("5b17b966-2f07-43c8-86bb-e9e870ef55b1", "shop")
    expressions = ban_expressions(changes)
    assert len(expressions) == 3
    for expression in expressions:
        assert re.match(BAN_PATTERN, expression), expression
    for refused in (
        "req.url ~ .",  # not lurker-friendly
        "obj.http.X-Edgemart-Tags ~ a && obj.status == 200",
        "obj.http.Cache-Control ~ public",
        "obj.http.X-Edgemart-Tags ~ a b",
    ):
        assert not re.match(BAN_PATTERN, refused), refused
    assert f'{{"{BAN_PATTERN}"}}' in VCL


def test_tags_and_url_are_stored_with_the_page_and_never_delivered() -> None:
    assert "set beresp.http.X-Edge-Url = bereq.url;" in VCL
    deliver = VCL[VCL.index("sub vcl_deliver {") :]
    assert "unset resp.http.X-Edgemart-Tags;" in deliver
    assert "unset resp.http.X-Edge-Url;" in deliver


@pytest.mark.parametrize("rule", CACHE_RULES.values(), ids=lambda rule: rule.name)
def test_pages_showing_stock_are_capped_at_the_edge(rule: CacheRule) -> None:
    block = VCL[VCL.index(f'if (bereq.http.X-Edge-Rule == "{rule.name}") {{') :]
    block = block[: block.index("\n    }\n")]
    capped = f"if (beresp.ttl > {edge_ttl(rule)}s) {{" in block
    assert capped == (rule.name in STOCK_RULES)
    assert capped == (edge_ttl(rule) < rule.s_maxage)


# ---- Tenants (decision 0043) ----


def test_the_cache_key_holds_the_host_without_case_or_port() -> None:
    hash_sub = VCL[VCL.index("sub vcl_hash {") :]
    hash_sub = hash_sub[: hash_sub.index("return (lookup);")]
    assert 'hash_data(std.tolower(regsub(req.http.host, ":[0-9]+$", "")));' in hash_sub


def test_the_gateway_is_told_the_host_the_edge_keyed_on_and_nothing_else() -> None:
    recv = VCL[VCL.index("sub vcl_recv {") :]
    first_rule = recv.index("X-Edge-Rule = ")
    assert recv.index("unset req.http.CloudFront-Viewer-Host;") < first_rule
    assert recv.index("set req.http.X-Forwarded-Host = req.http.host;") < first_rule


def test_a_tenant_s_page_is_stored_under_its_url_scoped_as_tenantscope_scopes_it() -> None:
    from edgemart.cache import TENANT_HEADER
    from edgemart.tenantscope import scoped
    from gateway.edge import SCOPED_URL
    from tests.support.tenants import ACME

    values = {f"beresp.http.{TENANT_HEADER}": str(ACME.id), "bereq.url": "/stores/s?limit=5"}
    built = "".join(
        values[part] if part in values else part.strip('"') for part in SCOPED_URL.split(" + ")
    )
    assert built == scoped(ACME, "/stores/s?limit=5")
    assert f"set beresp.http.X-Edge-Url = {SCOPED_URL};" in VCL
    assert f"unset resp.http.{TENANT_HEADER};" in VCL


def test_a_tenant_s_bans_are_ones_the_edge_takes() -> None:
    from tests.support.tenants import ACME

    changes = listing_changed("5b17b966-2f07-43c8-86bb-e9e870ef55b1", "shop", tenant=ACME)
    for expression in ban_expressions(changes):
        assert re.match(BAN_PATTERN, expression), expression
