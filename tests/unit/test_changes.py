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
