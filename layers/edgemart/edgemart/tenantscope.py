"""Names that belong to one tenant: cache keys, cache tags, key prefixes, rate-limit keys,
the edge's stored URLs. The one way such a name is made tenant-specific (decision 0043).

`scoped(tenant, name)` is the name itself for the `default` tenant, so a single-tenant
deployment's keys, tags, Redis entries and edge bans are spelled exactly as before tenancy;
for any other tenant it is `@<tenant id>:` followed by the name. No unscoped name starts with
`@` (keys start with a word, tags with their kind, URLs with `/`), so:
- two tenants' names never meet, even where the names within them do (`store:shoes`);
- a scoped prefix is a prefix of exactly its own tenant's scoped keys (`@<A>:search?` of A's
  search pages, never of B's or the default tenant's), so dropping by prefix stays a
  `startswith`;
- `split_scope` recovers the tenant and the name (the edge needs both).

The tenant's id, not its slug: it is what every process holds (a queued order carries only
the id), and it never changes. It is a UUID, so nothing in it is special in a Redis key, a
regular expression, a ban expression or an HTTP header.
"""

from __future__ import annotations

from typing import Final
from uuid import UUID

from edgemart.tenancy import DEFAULT_TENANT_ID, Tenant, tenant_id_of

SCOPE_MARK: Final = "@"
SCOPE_END: Final = ":"
_ID_LENGTH: Final = 36  # a UUID's canonical text


def scope_prefix(tenant: Tenant | UUID) -> str:
    """What `scoped` puts before a name: nothing for `default`, `@<id>:` for the others."""
    tenant_id = tenant_id_of(tenant)
    if tenant_id == DEFAULT_TENANT_ID:
        return ""
    return f"{SCOPE_MARK}{tenant_id}{SCOPE_END}"


def scoped(tenant: Tenant | UUID, name: str) -> str:
    """`name` as `tenant`'s: itself for `default`, `@<id>:<name>` otherwise."""
    return scope_prefix(tenant) + name


def split_scope(name: str) -> tuple[UUID, str]:
    """(tenant id, unscoped name) of a name `scoped` made; a name without a scope (or with a
    malformed one, which no tenant's name has) is the default tenant's, as it stands."""
    if not name.startswith(SCOPE_MARK):
        return DEFAULT_TENANT_ID, name
    end = 1 + _ID_LENGTH
    if name[end : end + 1] != SCOPE_END:
        return DEFAULT_TENANT_ID, name
    try:
        tenant_id = UUID(name[1:end])
    except ValueError:
        return DEFAULT_TENANT_ID, name
    if str(tenant_id) != name[1:end]:  # only the canonical spelling `scoped` writes
        return DEFAULT_TENANT_ID, name
    return tenant_id, name[end + 1 :]
