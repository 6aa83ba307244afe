"""What a change purges at the edge: CloudFront paths and Varnish ban expressions from the one
declaration of the pages tags and prefixes name, the per-second batching of invalidations,
the stock bound, and the backend the settings choose."""

from __future__ import annotations

import re
import socket

import pytest

from edgemart import metrics
from edgemart.cache import CACHE_RULES
from edgemart.changes import (
    KEY_PREFIXES,
    SEARCH_KEY_PREFIX,
    Changes,
    listing_changed,
    listing_created,
    popular_searches_changed,
    stock_changed,
)
from edgemart.edgepurge import (
    PREFIX_PAGES,
    STOCK_EDGE_TTL_S,
    STOCK_RULES,
    TAG_PAGES,
    CloudFrontPurge,
    InvalidationBatch,
    Page,
    VarnishPurge,
    ban_expressions,
    build_edge_purge,
    cloudfront_paths,
    cloudfront_targets,
    edge_ttl,
    unnamed,
)
from edgemart.routetable import ROUTES
from edgemart.settings import Settings, SettingsError
from tests.conftest import unused_port

PRODUCT = "5b17b966-2f07-43c8-86bb-e9e870ef55b1"
OTHER = "0c6f7d4e-8a7b-4c1e-9d3f-2a1b0c9d8e7f"


# ---- The declaration ----


@pytest.mark.parametrize("label", [*TAG_PAGES.values(), *PREFIX_PAGES.values()])
def test_every_named_page_is_a_cached_get_route_of_the_table(label: str) -> None:
    (spec,) = [route for route in ROUTES if route.label == label]
    assert spec.method == "GET" and spec.cache_rule is not None


def test_a_tag_fills_its_route_s_one_parameter_and_a_prefix_route_has_none() -> None:
    for label in TAG_PAGES.values():
        assert len(re.findall(r"\{\w+\}", label)) == 1, label
    for label in PREFIX_PAGES.values():
        assert "{" not in label, label


def test_every_page_a_tag_names_shows_stock() -> None:
    """A purchase names only its product: every page a tag names is capped at the edge."""
    for label in TAG_PAGES.values():
        (spec,) = [route for route in ROUTES if route.label == label]
        assert spec.cache_rule in STOCK_RULES
        assert edge_ttl(CACHE_RULES[spec.cache_rule]) <= STOCK_EDGE_TTL_S


def test_the_tags_and_prefixes_are_the_ones_changes_writes() -> None:
    assert set(TAG_PAGES) == {"product:", "store:"}
    assert stock_changed([PRODUCT]).tags == {f"product:{PRODUCT}"}
    assert listing_created("shop").tags == {"store:shop"}
    assert set(PREFIX_PAGES) == set(KEY_PREFIXES)  # every prefix a write may name


def test_a_page_knows_its_path_its_key_and_its_edge_ttl() -> None:
    for label, path, keyed, ttl in (
        ("GET /products/{product_id}", "/products/{product_id}", False, STOCK_EDGE_TTL_S),
        ("GET /stores/{slug}", "/stores/{slug}", True, STOCK_EDGE_TTL_S),
        ("GET /marketplace/search", "/marketplace/search", True, STOCK_EDGE_TTL_S),
        ("GET /marketplace/search/popular", "/marketplace/search/popular", False, 60),
    ):
        page = Page.of(label)
        assert (page.path, page.keyed_on_query, page.edge_ttl) == (path, keyed, ttl)
        assert page is Page.of(label)  # looked up once
    with pytest.raises(ValueError, match="not cached"):
        Page.of("GET /wallet")
    with pytest.raises(ValueError, match="not in the route table"):
        Page.of("GET /nowhere")


# ---- CloudFront paths ----


def test_a_purchase_invalidates_the_product_s_page() -> None:
    assert cloudfront_paths(stock_changed([PRODUCT])) == [f"/products/{PRODUCT}"]


def test_a_new_listing_invalidates_every_query_of_its_store_and_of_search() -> None:
    assert cloudfront_paths(listing_created("handmade-pots")) == [
        "/stores/handmade-pots*",
        "/marketplace/search*",
    ]


def test_an_edited_listing_invalidates_all_three_each_once() -> None:
    changes = listing_changed(PRODUCT, "shop") | listing_changed(OTHER, "shop")
    assert cloudfront_paths(changes) == [
        f"/products/{OTHER}",
        f"/products/{PRODUCT}",
        "/stores/shop*",
        "/marketplace/search*",
    ]


def test_a_hidden_popular_search_invalidates_the_popular_list() -> None:
    assert cloudfront_paths(popular_searches_changed()) == ["/marketplace/search/popular"]


def test_each_path_carries_the_edge_ttl_of_its_page() -> None:
    """How long retrying an invalidation can matter: past it the page expired anyway."""
    changes = listing_changed(PRODUCT, "shop") | popular_searches_changed()
    assert cloudfront_targets(changes) == {
        f"/products/{PRODUCT}": STOCK_EDGE_TTL_S,
        "/stores/shop*": STOCK_EDGE_TTL_S,
        "/marketplace/search/popular": CACHE_RULES["popular_searches"].s_maxage,
        "/marketplace/search*": STOCK_EDGE_TTL_S,
    }


def test_paths_are_explicit_never_everything() -> None:
    changes = listing_changed(PRODUCT, "shop")
    for path in cloudfront_paths(changes):
        assert path.startswith("/") and path != "/*" and path.count("*") <= 1
        assert path.endswith("*") or "*" not in path


@pytest.mark.parametrize(
    "tag",
    ["category:3", "product:", "product:a b", "product:../x", 'store:"x"', "product:a*", "nokind"],
)
def test_a_tag_naming_no_page_or_unsafe_names_no_path(tag: str) -> None:
    assert cloudfront_paths(Changes(tags=frozenset({tag}))) == []


def test_an_unsafe_tag_names_nothing_and_is_reported() -> None:
    changes = Changes(tags=frozenset({"product:a b"}))
    assert cloudfront_paths(changes) == []
    assert ban_expressions(changes) == []
    assert unnamed(changes) == ["product:a b"]
    assert unnamed(listing_changed(PRODUCT, "shop") | popular_searches_changed()) == []


# ---- Varnish ban expressions ----


def test_one_ban_per_tag_on_the_stored_tags_and_one_per_prefix_on_the_stored_url() -> None:
    assert ban_expressions(listing_changed(PRODUCT, "shop")) == [
        f"obj.http.X-Edgemart-Tags ~ (^|\\s)product:{PRODUCT}(\\s|$)",
        "obj.http.X-Edgemart-Tags ~ (^|\\s)store:shop(\\s|$)",
        "obj.http.X-Edge-Url ~ ^/marketplace/search(\\?|$)",
    ]


def test_bans_test_objects_only_and_hold_no_space_in_their_argument() -> None:
    """`obj.*` only (the ban lurker can apply them); a ban argument ends at a space."""
    for expression in ban_expressions(listing_changed(PRODUCT, "shop")):
        field, operator, argument = expression.split(" ")
        assert field.startswith("obj.http.") and operator == "~" and '"' not in argument


def _argument(expression: str) -> re.Pattern[str]:
    return re.compile(expression.split(" ", 2)[2])


def test_a_tag_ban_matches_the_whole_tag_anywhere_in_the_header() -> None:
    (ban,) = ban_expressions(stock_changed(["abc"]))
    pattern = _argument(ban)
    for header in ("product:abc", "product:x product:abc store:s", "product:abc store:s"):
        assert pattern.search(header), header
    for header in ("product:abcd", "product:xabc", "store:abc", "product:ab"):
        assert not pattern.search(header), header


def test_a_hidden_popular_search_bans_the_popular_list() -> None:
    (ban,) = ban_expressions(popular_searches_changed())
    pattern = _argument(ban)
    assert pattern.search("/marketplace/search/popular")
    assert not pattern.search("/marketplace/search?q=popular")


def test_a_prefix_ban_matches_every_query_of_its_route_and_nothing_else() -> None:
    (ban,) = ban_expressions(Changes(prefixes=frozenset({SEARCH_KEY_PREFIX})))
    pattern = _argument(ban)
    for url in ("/marketplace/search", "/marketplace/search?q=lamp", "/marketplace/search?a=1&q=x"):
        assert pattern.search(url), url
    for url in ("/marketplace/search/popular", "/marketplace/searches", "/x/marketplace/search"):
        assert not pattern.search(url), url


def test_an_unsafe_tag_is_never_banned() -> None:
    changes = Changes(tags=frozenset({"product:a b", "product:.*", "store:ok"}))
    assert ban_expressions(changes) == ["obj.http.X-Edgemart-Tags ~ (^|\\s)store:ok(\\s|$)"]


# ---- Batching per second ----


def test_the_first_call_goes_at_once_with_every_path_queued() -> None:
    batch = InvalidationBatch()
    assert batch.due_at() is None and batch.take(100.0) is None
    batch.add(["/a", "/b"], now=100.0)
    batch.add(["/b", "/c"], now=100.2)
    assert batch.take(100.3) == (["/a", "/b", "/c"], 100.0)
    assert len(batch) == 0 and batch.take(100.3) is None


def test_later_paths_wait_a_second_after_the_last_call_and_go_together() -> None:
    batch = InvalidationBatch()
    batch.add(["/a"], now=10.0)
    assert batch.take(10.0) == (["/a"], 10.0)
    batch.add(["/b"], now=10.1)
    batch.add(["/c"], now=10.5)
    assert batch.due_at() == 11.0
    assert batch.take(10.99) is None
    assert batch.take(11.0) == (["/b", "/c"], 10.1)
    batch.add(["/d"], now=15.0)  # long after: goes at once
    assert batch.take(15.0) == (["/d"], 15.0)


def test_a_retry_counts_as_a_call() -> None:
    batch = InvalidationBatch()
    batch.add(["/a"], now=0.0)
    batch.take(0.0)
    batch.add(["/b"], now=0.5)
    batch.called(1.5)  # a throttled batch tried again
    assert batch.take(2.0) is None
    assert batch.take(2.5) == (["/b"], 0.5)


def test_a_batch_carries_at_most_max_paths_and_the_rest_waits_its_second() -> None:
    batch = InvalidationBatch(max_paths=2)
    batch.add(["/a", "/b", "/c"], now=0.0)
    assert batch.take(0.0) == (["/a", "/b"], 0.0)
    assert batch.due_at() == 1.0
    assert batch.take(1.0) == (["/c"], 0.0)


def test_calls_are_never_closer_than_a_second_however_paths_arrive() -> None:
    batch = InvalidationBatch()
    calls = []
    now = 0.0
    for step in range(400):  # a path every 13 ms, polled every 13 ms
        now = step * 0.013
        batch.add([f"/p{step}"], now=now)
        if batch.take(now) is not None:
            calls.append(now)
    assert len(calls) >= 5
    assert all(b - a >= 1.0 for a, b in zip(calls, calls[1:], strict=False))


# ---- The stock bound ----


@pytest.mark.parametrize("rule", CACHE_RULES.values(), ids=lambda rule: rule.name)
def test_stock_pages_are_capped_at_the_edge_and_the_others_keep_their_ttl(rule: object) -> None:
    from edgemart.cache import CacheRule

    assert isinstance(rule, CacheRule)
    if rule.name in STOCK_RULES:
        assert edge_ttl(rule) == min(rule.s_maxage, STOCK_EDGE_TTL_S)
    else:
        assert edge_ttl(rule) == rule.s_maxage


def test_the_stock_rules_are_rules() -> None:
    assert STOCK_RULES <= set(CACHE_RULES)
    assert {"product_page", "store_page", "search"} <= STOCK_RULES


# ---- From settings ----


def test_off_builds_nothing() -> None:
    assert build_edge_purge(Settings()) is None


def test_varnish_needs_a_url() -> None:
    with pytest.raises(SettingsError, match="EDGE_PURGE=varnish needs EDGE_PURGE_URL"):
        build_edge_purge(Settings(edge_purge="varnish"))
    with pytest.raises(SettingsError, match="EDGE_PURGE_URL must be an http"):
        build_edge_purge(Settings(edge_purge="varnish", edge_purge_url="varnish:8080"))
    built = build_edge_purge(Settings(edge_purge="varnish", edge_purge_url="http://127.0.0.1:6081"))
    assert isinstance(built, VarnishPurge) and built.backend == "varnish"


def test_cloudfront_needs_a_distribution() -> None:
    with pytest.raises(SettingsError, match="CLOUDFRONT_DISTRIBUTION_ID or"):
        build_edge_purge(Settings(edge_purge="cloudfront"))
    built = build_edge_purge(Settings(edge_purge="cloudfront", cloudfront_distribution_id="E1"))
    assert isinstance(built, CloudFrontPurge) and built.distribution_id == "E1"
    by_parameter = build_edge_purge(
        Settings(edge_purge="cloudfront", cloudfront_distribution_parameter="/x/id")
    )
    assert isinstance(by_parameter, CloudFrontPurge)
    assert by_parameter.distribution_parameter == "/x/id"


# ---- Never raised into the write ----


def test_an_edge_that_is_down_is_counted_never_raised() -> None:
    purge = VarnishPurge(f"http://127.0.0.1:{unused_port()}", timeout_s=0.5)
    before = metrics.count(metrics.EDGE_PURGES, backend="varnish", result="failed")
    purge.purge(listing_changed(PRODUCT, "shop"))
    assert purge.flush(timeout_s=10)
    assert metrics.count(metrics.EDGE_PURGES, backend="varnish", result="failed") == before + 3
    purge.close()


def test_purge_returns_while_the_edge_has_not_answered() -> None:
    """An edge that takes the connection and never answers holds the sender, not the write."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        purge = VarnishPurge(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=5)
        purge.purge(stock_changed([PRODUCT]))
        assert not purge.flush(timeout_s=0.3)  # the BAN is still waiting for its answer
    assert purge.flush(timeout_s=10)  # the edge went away: the BAN failed, counted
    purge.close()


def test_a_change_naming_nothing_starts_no_thread() -> None:
    purge = VarnishPurge("http://127.0.0.1:9")
    purge.purge(Changes())
    assert purge._thread is None
    assert purge.flush(timeout_s=0.1)


def test_after_close_a_purge_is_dropped() -> None:
    purge = VarnishPurge(f"http://127.0.0.1:{unused_port()}", timeout_s=0.5)
    purge.close()
    purge.purge(stock_changed([PRODUCT]))
    assert purge._thread is None


# ---- Tenants (decision 0043) ----


def test_a_tenant_s_tag_bans_carry_its_scoped_tags_and_its_prefix_bans_its_scoped_url() -> None:
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME

    escaped = re.escape(f"@{ACME.id}:")
    assert ban_expressions(listing_changed(PRODUCT, "shop", tenant=ACME)) == [
        f"obj.http.X-Edgemart-Tags ~ (^|\\s){scoped(ACME, 'product:' + PRODUCT)}(\\s|$)",
        f"obj.http.X-Edgemart-Tags ~ (^|\\s){scoped(ACME, 'store:shop')}(\\s|$)",
        f"obj.http.X-Edge-Url ~ ^{escaped}/marketplace/search(\\?|$)",
    ]
    for expression in ban_expressions(listing_changed(PRODUCT, "shop", tenant=ACME)):
        field, operator, argument = expression.split(" ")
        assert field.startswith("obj.http.") and operator == "~" and '"' not in argument
    assert unnamed(listing_changed(PRODUCT, "shop", tenant=ACME)) == []


def test_one_tenant_s_bans_never_match_another_s_pages() -> None:
    from edgemart.tenancy import DEFAULT_TENANT
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME, GLOBEX

    tag_ban, url_ban = ban_expressions(listing_created("shop", tenant=ACME))
    tags, url = _argument(tag_ban), _argument(url_ban)
    assert tags.search(f"{scoped(ACME, 'product:x')} {scoped(ACME, 'store:shop')}")
    assert url.search(scoped(ACME, "/marketplace/search?q=lamp"))
    for other in (DEFAULT_TENANT, GLOBEX):
        assert not tags.search(f"{scoped(other, 'product:x')} {scoped(other, 'store:shop')}")
        assert not url.search(scoped(other, "/marketplace/search?q=lamp"))
    # The default tenant's bans (spelled as before tenancy) miss the other tenants' pages.
    default_tags, default_url = map(_argument, ban_expressions(listing_created("shop")))
    assert not default_tags.search(scoped(ACME, "store:shop"))
    assert not default_url.search(scoped(ACME, "/marketplace/search?q=lamp"))


def test_cloudfront_paths_are_the_same_for_every_tenant() -> None:
    """One distribution serves every tenant's domains: a path covers all of them."""
    from tests.support.tenants import ACME

    assert cloudfront_paths(listing_changed(PRODUCT, "shop", tenant=ACME)) == cloudfront_paths(
        listing_changed(PRODUCT, "shop")
    )
    assert cloudfront_paths(popular_searches_changed(tenant=ACME)) == [
        "/marketplace/search/popular"
    ]
