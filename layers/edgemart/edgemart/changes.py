"""What a committed write changed, named the way cached pages name what they show.

A cached page carries tags: `product:<id>` for every product it shows, `store:<slug>` for a
store page. A write describes its effect as `Changes`: the tags it made stale, and the cache
key prefixes whose pages it may have changed without being able to name them (a new or
edited listing can enter any search result). A function hands them to
`Services.invalidate` once the write has committed: they are dropped from its own process's
cache at once (`apply`), and from the fleet's shared cache and every other process's cache
through Redis (`edgemart.broadcast`). `Changes` is plain data (two sets of strings), so the
same value travels as a message.

A prefix must be one of `KEY_PREFIXES`: the shared cache files each page under the prefixes
its key starts with when it stores it (`marks`), which is how a write that names only a
prefix finds the pages in Redis.

Every key, tag and prefix is its tenant's (`edgemart.tenantscope.scoped`): a page is cached
under its tenant's key with its tenant's tags (`edgemart.cache.serve_cached` scopes both), and
a write names what it changed in its own tenant (the `tenant` of the constructors below), so
`store:shoes` or `search?` changed in one marketplace drops nothing of another. The default
tenant's names are spelled as they were before tenancy.

What changes what:
- a purchase, or a queued order applied: the product's stock, `in_stock` and `sold_count`,
  shown on its page, its store's page and any search page listing it (`stock_changed`);
- a new listing: its store's page and any search (`listing_created`);
- an edited listing: everything showing the product, its store's page and any search, since an
  edit can make it match (or stop matching) a query (`listing_changed`);
- a search term hidden or shown again by an admin: the popular-searches list
  (`popular_searches_changed`).
The home page is rebuilt on its schedule and may lag by it; other admin changes (kill
switches, purchase modes, credits) show on no cached page.

`channels` names the live-update channels (edgemart.live) whose state the write changed, each
scoped to its tenant (`live_channel`): an order whose status moved, a product whose stock may
have. They ride the same broadcast, after the same commit, and drop nothing from any cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from edgemart import metrics
from edgemart.cache import TTLCache
from edgemart.tenancy import DEFAULT_TENANT_ID, Tenant, tenant_id_of
from edgemart.tenantscope import scope_prefix, scoped, split_scope

SEARCH_KEY_PREFIX = "search?"
POPULAR_SEARCHES_KEY = "popular_searches"
"""The popular-searches list's cache key (its cache rule's name): a prefix of itself only."""
KEY_PREFIXES = (SEARCH_KEY_PREFIX, POPULAR_SEARCHES_KEY)
"""Every key prefix a write may name (see the module docstring)."""

LOCAL = "local"
"""The `transport` of an invalidation that never leaves its process."""


def product_tag(product_id: str) -> str:
    return f"product:{product_id}"


def store_tag(slug: str) -> str:
    return f"store:{slug}"


def prefix_mark(prefix: str) -> str:
    """The shared cache's name for a key prefix, beside the tags (no tag starts `prefix:`)."""
    return f"prefix:{prefix}"


def product_tags(products: Iterable[Mapping[str, Any]]) -> list[str]:
    """The tags of a list of Product documents (search results, a store page's products)."""
    return [product_tag(str(product["id"])) for product in products]


def key_marks(key: str, tags: Iterable[str]) -> list[str]:
    """What a page stored under `key` with `tags` is filed under in the shared cache: its tags
    and the marks of the prefixes its key starts with (its tenant's prefixes)."""
    marks = list(dict.fromkeys(tags))
    tenant_id, unscoped_key = split_scope(key)
    scope = scope_prefix(tenant_id)
    marks.extend(
        prefix_mark(scope + prefix) for prefix in KEY_PREFIXES if unscoped_key.startswith(prefix)
    )
    return marks


def live_channel(channel: str, tenant_id: object = DEFAULT_TENANT_ID) -> str:
    """A live-update channel (`order:<id>`, `product:<id>`) as `Changes.channels` names it:
    within its tenant, so one tenant's change never reaches another's subscribers."""
    return f"{tenant_id}/{channel}"


@dataclass(frozen=True, slots=True)
class Changes:
    tags: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = {prefix for prefix in self.prefixes if split_scope(prefix)[1] not in KEY_PREFIXES}
        if unknown:
            raise ValueError(f"key prefixes {sorted(unknown)} are not in KEY_PREFIXES")

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.tags | other.tags,
            self.prefixes | other.prefixes,
            self.channels | other.channels,
        )

    def __bool__(self) -> bool:
        return bool(self.tags or self.prefixes or self.channels)

    @property
    def stales_pages(self) -> bool:
        """Whether any cached page is stale (channels alone stale none)."""
        return bool(self.tags or self.prefixes)

    @property
    def marks(self) -> list[str]:
        """What the shared cache drops: the tags, and the marks of the prefixes."""
        return [*sorted(self.tags), *(prefix_mark(prefix) for prefix in sorted(self.prefixes))]

    def apply(self, cache: TTLCache, *, transport: str = LOCAL) -> None:
        """Drop what these changes made stale from this process's cache: sent and received
        in-process (`transport` local), or received from another process."""
        if self.stales_pages:
            if transport == LOCAL:
                metrics.record(metrics.INVALIDATIONS_SENT, transport=LOCAL)
            cache.invalidate(tags=self.tags, prefixes=self.prefixes)
            metrics.record(metrics.INVALIDATIONS_RECEIVED, transport=transport)


def stock_changed(
    product_ids: Iterable[str], *, tenant: Tenant | UUID = DEFAULT_TENANT_ID
) -> Changes:
    return Changes(
        tags=frozenset(scoped(tenant, product_tag(str(product_id))) for product_id in product_ids)
    )


def listing_created(store_slug: str, *, tenant: Tenant | UUID = DEFAULT_TENANT_ID) -> Changes:
    return Changes(
        tags=frozenset({scoped(tenant, store_tag(store_slug))}),
        prefixes=frozenset({scoped(tenant, SEARCH_KEY_PREFIX)}),
    )


def listing_changed(
    product_id: str, store_slug: str, *, tenant: Tenant | UUID = DEFAULT_TENANT_ID
) -> Changes:
    return stock_changed([product_id], tenant=tenant) | listing_created(store_slug, tenant=tenant)


def popular_searches_changed(*, tenant: Tenant | UUID = DEFAULT_TENANT_ID) -> Changes:
    return Changes(prefixes=frozenset({scoped(tenant, POPULAR_SEARCHES_KEY)}))


def order_status_changed(
    order_ids: Iterable[str], *, tenant: Tenant | UUID = DEFAULT_TENANT_ID
) -> Changes:
    """Queued orders the worker applied (completed or failed): their live channels."""
    return _live_channels("order", order_ids, tenant)


def stock_pushed(
    product_ids: Iterable[str], *, tenant: Tenant | UUID = DEFAULT_TENANT_ID
) -> Changes:
    """Products whose stock may have moved: their live channels (the pages are `stock_changed`)."""
    return _live_channels("product", product_ids, tenant)


def _live_channels(kind: str, ids: Iterable[str], tenant: Tenant | UUID) -> Changes:
    """The live channels of the `kind` things `ids` (`order`, `product`) in `tenant`."""
    tenant_id = tenant_id_of(tenant)
    return Changes(channels=frozenset(live_channel(f"{kind}:{one}", tenant_id) for one in ids))
