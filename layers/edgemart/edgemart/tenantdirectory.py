"""Host → tenant, per process: `tenant_domains` looked up once and remembered (decision 0041).

Every request in multi mode needs its tenant before anything else, so the answer for a host is
kept in the process, unknown hosts included (None): a host that names no tenant costs one
query, not one per request. The directory is bounded (`max_hosts`, least recently used
dropped first): a flood of made-up `Host` headers costs at most that many entries.

**Freshness.** A domain added, moved or removed must take effect in every process within a
second. The process that changed it calls `Services.tenant_directory_changed`: its own
directory is emptied at once (`changed`) and a "tenants changed" message goes out on the
invalidation broadcast (edgemart.broadcast), on which every listening process empties its
own. An entry is served only while `trusts(as_of, now)` says no change can have been missed:
the broadcast's `Subscription.covers`, the rule the page cache follows (within its 0.8 s
window, or longer while a live, pinged subscription proves every message was heard). A
process that does not listen (Lambda, or no Redis) therefore reads a host again once its
entry is 0.8 s old. Whatever the subscription, an entry older than `max_age_s` is read again,
in case a domain was changed in SQL by hand, with no message.

A load that began before a change is not stored (`changed` bumps a generation), and an entry's
age counts from when its query was sent: neither can outlive a change it could have missed.

`tenants` and `tenant_domains` are platform tables, not tenant-scoped: they are read without
`in_tenant`, on the primary (a replica may not hold a change yet).
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

from edgemart.tenancy import Tenant

if TYPE_CHECKING:
    from edgemart.db import Database

MAX_HOSTS: Final = 10_000
"""Hosts remembered per process: far more than a deployment has domains, and bounded."""
MAX_AGE_S: Final = 60.0

TENANT_OF_DOMAIN_SQL: Final = """
SELECT t.id, t.slug, t.platform_fee_bps
FROM tenant_domains d JOIN tenants t ON t.id = d.tenant_id
WHERE d.domain = %s
"""

Trust = Callable[[float, float], bool]
"""(as_of, now) → whether an entry filled at `as_of` may still be served."""


class _Miss(enum.Enum):
    MISS = enum.auto()


MISS: Final = _Miss.MISS
"""`TenantDirectory.cached`: nothing trusted is known of the host; `load` it."""


class TenantSource(Protocol):
    async def tenant_of_domain(self, domain: str) -> Tenant | None:
        """The tenant owning `domain` (a `tenant_domains` key), or None."""
        ...


class DatabaseTenantSource:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def tenant_of_domain(self, domain: str) -> Tenant | None:
        async with self.database.connection() as conn:
            cursor = await conn.execute(TENANT_OF_DOMAIN_SQL, (domain,))
            row = await cursor.fetchone()
        if row is None:
            return None
        return Tenant(row["id"], row["slug"], row["platform_fee_bps"])


@dataclass(eq=False, repr=False)
class TenantDirectory:
    source: TenantSource
    _: KW_ONLY
    trusts: Trust
    clock: Callable[[], float] = time.time
    max_hosts: int = MAX_HOSTS
    max_age_s: float = MAX_AGE_S
    _entries: OrderedDict[str, tuple[Tenant | None, float]] = field(
        default_factory=OrderedDict, init=False
    )
    _generation: int = field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, host: str) -> Tenant | None | Literal[_Miss.MISS]:
        """The tenant of `host` (None: no tenant) while its entry is trusted, else MISS."""
        entry = self._entries.get(host)
        if entry is None:
            return MISS
        tenant, as_of = entry
        now = self.clock()
        if now - as_of > self.max_age_s or not self.trusts(as_of, now):
            del self._entries[host]
            return MISS
        self._entries.move_to_end(host)
        return tenant

    async def load(self, host: str) -> Tenant | None:
        """Ask the source, and remember its answer unless the directory changed meanwhile."""
        generation, as_of = self._generation, self.clock()
        tenant = await self.source.tenant_of_domain(host)
        if generation == self._generation:
            self._entries[host] = (tenant, as_of)
            self._entries.move_to_end(host)
            while len(self._entries) > self.max_hosts:
                self._entries.popitem(last=False)
        return tenant

    async def tenant_of(self, host: str) -> Tenant | None:
        cached = self.cached(host)
        return await self.load(host) if cached is MISS else cached

    def changed(self) -> None:
        """A tenant or domain changed (here or in another process): forget every host."""
        self._generation += 1
        self._entries.clear()
