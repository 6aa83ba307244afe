"""Applying a write's changes to this process's cache, counted as invalidations."""

from edgemart import metrics
from edgemart.cache import Rendered, TTLCache
from edgemart.changes import Changes, stock_changed


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
