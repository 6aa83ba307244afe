"""What a committed write changed, named the way cached pages name what they show.

A cached page carries tags: `product:<id>` for every product it shows, `store:<slug>` for a
store page. A write describes its effect as `Changes`: the tags it made stale, and the cache
key prefixes whose pages it may have changed without being able to name them (a new or
edited listing can enter any search result). `apply` drops those pages from this process's
cache, so the process that made the write serves the new data at once. `Changes` is plain
data, so the same value can later be sent to other processes.

What changes what:
- a purchase, or a queued order applied: the product's stock, `in_stock` and `sold_count`,
  shown on its page, its store's page and any search page listing it (`stock_changed`);
- a new listing: its store's page and any search (`listing_created`);
- an edited listing: everything showing the product, its store's page and any search, since an
  edit can make it match (or stop matching) a query (`listing_changed`).
The home page is rebuilt on its schedule and may lag by it; admin changes (kill switches,
purchase modes, credits) show on no cached page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgemart import metrics
from edgemart.cache import TTLCache

SEARCH_KEY_PREFIX = "search?"
LOCAL = "local"
"""The `transport` of an invalidation that never leaves its process."""


def product_tag(product_id: str) -> str:
    return f"product:{product_id}"


def store_tag(slug: str) -> str:
    return f"store:{slug}"


def product_tags(products: Iterable[Mapping[str, Any]]) -> list[str]:
    """The tags of a list of Product documents (search results, a store page's products)."""
    return [product_tag(str(product["id"])) for product in products]


@dataclass(frozen=True, slots=True)
class Changes:
    tags: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()

    def __or__(self, other: Changes) -> Changes:
        return Changes(self.tags | other.tags, self.prefixes | other.prefixes)

    def apply(self, cache: TTLCache) -> None:
        """Drop what these changes made stale from this process's cache: an invalidation
        sent and received in-process (`transport` local)."""
        if self.tags or self.prefixes:
            metrics.record(metrics.INVALIDATIONS_SENT, transport=LOCAL)
            cache.invalidate(tags=self.tags, prefixes=self.prefixes)
            metrics.record(metrics.INVALIDATIONS_RECEIVED, transport=LOCAL)


def stock_changed(product_ids: Iterable[str]) -> Changes:
    return Changes(tags=frozenset(product_tag(str(product_id)) for product_id in product_ids))


def listing_created(store_slug: str) -> Changes:
    return Changes(tags=frozenset({store_tag(store_slug)}), prefixes=frozenset({SEARCH_KEY_PREFIX}))


def listing_changed(product_id: str, store_slug: str) -> Changes:
    return stock_changed([product_id]) | listing_created(store_slug)
