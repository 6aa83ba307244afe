"""The local edge's VCL is generated from the cache rules: every rule's routes, windows and
cache key appear in it, and nothing else is looked up in the cache."""

from __future__ import annotations

import re

import pytest

from edgemart.cache import CACHE_RULES, CacheRule
from gateway.edge import render_vcl, route_regex

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
