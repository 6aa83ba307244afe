"""`edgemart serve --demo-tenants N`: marketplaces `demo-1` ... `demo-N` to try multi-tenancy
on one machine. Each answers on `demo-<n>.localhost` (every `*.localhost` name is this machine,
RFC 6761) and holds a small demo catalog of its own (gateway.democatalog, loaded into that
tenant); the default tenant keeps `localhost` and `127.0.0.1`.

Made as the platform route makes a tenant (`create_tenant()`, audited as done by `edgemart
serve`), by the schema's owner before the app starts, and only what is missing: a restart
finds the tenants and their catalogs and leaves them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

import psycopg

from edgemart.errors import EdgemartError
from edgemart.logging import logger
from gateway.democatalog import catalog_is_present, seed_catalog

DEMO_TENANT_PRODUCTS = 300
DEMO_TENANT_STORES = 6
DEMO_TENANT_BUYERS = 20
ACTOR = "edgemart serve"


class DemoTenantError(EdgemartError):
    """A demo tenant cannot be made: its domain is another tenant's."""


@dataclass(frozen=True, slots=True)
class DemoTenant:
    number: int
    id: UUID
    created: bool
    products_loaded: int

    @property
    def slug(self) -> str:
        return demo_slug(self.number)

    @property
    def domain(self) -> str:
        return demo_domain(self.number)


def demo_slug(number: int) -> str:
    return f"demo-{number}"


def demo_domain(number: int) -> str:
    return f"{demo_slug(number)}.localhost"


def prepare_demo_tenants(owner_url: str, count: int) -> list[DemoTenant]:
    """Tenants demo-1..demo-`count`, each with its catalog: made where missing."""
    return [_prepare(owner_url, number) for number in range(1, count + 1)]


def _prepare(owner_url: str, number: int) -> DemoTenant:
    slug = demo_slug(number)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        tenant_id = _tenant_id(conn, slug)
        created = tenant_id is None
        if tenant_id is None:
            tenant_id = _create(conn, number)
        present = catalog_is_present(conn, tenant_id)
    loaded = 0
    if not present:
        report = seed_catalog(
            owner_url,
            products=DEMO_TENANT_PRODUCTS,
            stores=DEMO_TENANT_STORES,
            buyers=DEMO_TENANT_BUYERS,
            seed=number + 1,  # the default catalog's seed is 1: each tenant's differs
            tenant=tenant_id,
        )
        loaded = report.products
    return DemoTenant(number, tenant_id, created, loaded)


def _tenant_id(conn: psycopg.Connection[tuple[object, ...]], slug: str) -> UUID | None:
    row = conn.execute("SELECT id FROM tenants WHERE slug = %s", [slug]).fetchone()
    return None if row is None else UUID(str(row[0]))


def _create(conn: psycopg.Connection[tuple[object, ...]], number: int) -> UUID:
    slug, domain = demo_slug(number), demo_domain(number)
    try:
        row = conn.execute(
            "SELECT create_tenant(%s, %s, ARRAY[%s], NULL, %s, NULL) ->> 'id'",
            [slug, f"Demo marketplace {number}", domain, ACTOR],
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        # Another serve made it a moment ago, or the domain is some other tenant's.
        found = _tenant_id(conn, slug)
        if found is not None:
            return found
        raise DemoTenantError(
            f"cannot make demo tenant {slug}: its domain {domain} is another tenant's"
        ) from None
    if row is None:
        raise RuntimeError("create_tenant() returned no row")
    return UUID(str(row[0]))


def announce_demo_tenants(tenants: Iterable[DemoTenant], port: int) -> None:
    """One line per tenant with its URL on serve's port (whatever the bind address, the
    demo names are loopback's)."""
    for tenant in tenants:
        done = "made" if tenant.created else "found"
        catalog = (
            f"{tenant.products_loaded} demo products loaded"
            if tenant.products_loaded
            else "its catalog kept"
        )
        logger.info(
            "demo tenant %s (%s, %s): http://%s:%d/",
            tenant.slug,
            done,
            catalog,
            tenant.domain,
            port,
        )
