"""Applying a write's changes to this process's cache, counted as invalidations."""

import pytest

from edgemart import metrics
from edgemart.cache import CACHE_RULES, Rendered, TTLCache
from edgemart.changes import (
    POPULAR_SEARCHES_KEY,
    Changes,
    listing_created,
    popular_searches_changed,
    stock_changed,
)


def test_applying_changes_counts_one_invalidation_sent_and_received_locally() -> None:
    cache = TTLCache()
    cache.put("product:1", Rendered.of({"id": 1}, now=0), 60, tags=["product:1"])
    sent = metrics.count(metrics.INVALIDATIONS_SENT, transport="local")
    received = metrics.count(metrics.INVALIDATIONS_RECEIVED, transport="local")
    stock_changed(["1", "2"]).apply(cache)
    Changes().apply(cache)  # nothing changed: nothing sent
    assert len(cache) == 0
    assert metrics.count(metrics.INVALIDATIONS_SENT, transport="local") == sent + 1
    assert metrics.count(metrics.INVALIDATIONS_RECEIVED, transport="local") == received + 1


def test_changes_name_only_prefixes_the_shared_cache_files_pages_under() -> None:
    with pytest.raises(ValueError, match="KEY_PREFIXES"):
        Changes(prefixes=frozenset({"store:"}))
    assert listing_created("s").marks == ["store:s", "prefix:search?"]
    assert popular_searches_changed().marks == ["prefix:popular_searches"]


def test_the_popular_searches_key_is_its_cache_rule_s_name() -> None:
    """The search function caches the list under its rule's name; a hidden term drops it."""
    assert CACHE_RULES["popular_searches"].name == POPULAR_SEARCHES_KEY


def test_changes_heard_from_another_process_count_as_received_only() -> None:
    cache = TTLCache()
    cache.put("search?q=x", Rendered.of({}, now=0), 60)
    sent = metrics.count(metrics.INVALIDATIONS_SENT, transport="redis")
    received = metrics.count(metrics.INVALIDATIONS_RECEIVED, transport="redis")
    listing_created("s").apply(cache, transport="redis")
    assert len(cache) == 0
    assert metrics.count(metrics.INVALIDATIONS_SENT, transport="redis") == sent
    assert metrics.count(metrics.INVALIDATIONS_RECEIVED, transport="redis") == received + 1


# ---- Tenants (decision 0043) ----


def test_a_write_names_what_it_changed_in_its_own_tenant() -> None:
    from edgemart.changes import SEARCH_KEY_PREFIX, listing_changed
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME

    changes = listing_changed("p1", "shoes", tenant=ACME)
    assert changes.tags == {scoped(ACME, "product:p1"), scoped(ACME, "store:shoes")}
    assert changes.prefixes == {scoped(ACME, SEARCH_KEY_PREFIX)}
    assert popular_searches_changed(tenant=ACME).marks == [
        f"prefix:{scoped(ACME, POPULAR_SEARCHES_KEY)}"
    ]
    # The default tenant's: spelled as before tenancy.
    assert listing_changed("p1", "shoes") == Changes(
        frozenset({"product:p1", "store:shoes"}), frozenset({SEARCH_KEY_PREFIX})
    )


def test_a_scoped_prefix_must_still_be_one_of_key_prefixes() -> None:
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME

    with pytest.raises(ValueError, match="KEY_PREFIXES"):
        Changes(prefixes=frozenset({scoped(ACME, "store:")}))


def test_a_write_in_one_tenant_drops_its_pages_and_leaves_another_s() -> None:
    from edgemart.tenancy import DEFAULT_TENANT
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME, GLOBEX

    cache = TTLCache()
    tenants = (DEFAULT_TENANT, ACME, GLOBEX)
    for tenant in tenants:
        store = scoped(tenant, "store:shoes")
        cache.put(scoped(tenant, "store:shoes?"), Rendered.of({}, now=0), 60, tags=[store])
        cache.put(scoped(tenant, "search?q=x"), Rendered.of({}, now=0), 60)

    def kept() -> set[tuple[str, str]]:
        return {
            (tenant.slug, key)
            for tenant in tenants
            for key in ("store:shoes?", "search?q=x")
            if cache.fresh(scoped(tenant, key)) is not None
        }

    listing_created("shoes", tenant=ACME).apply(cache)
    assert kept() == {
        (slug, key) for slug in ("default", "globex") for key in ("store:shoes?", "search?q=x")
    }
    listing_created("shoes").apply(cache)  # the default tenant's write
    assert kept() == {("globex", "store:shoes?"), ("globex", "search?q=x")}
