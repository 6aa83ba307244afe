"""Platform function (role `platform_admin`, on a token that names no tenant): the tenants
themselves. `POST /platform/tenants` creates a marketplace with its domains, `GET
/platform/tenants/{slug}` reads one, `PUT /platform/tenants/{slug}/domains` replaces its
domains (docs/decisions/0042-platform-routes-and-roles.md). The routes answer on any host and
in either TENANCY mode: they are not scoped to a tenant, they administer them.

Domains are host names, stored lower-case: one differing only in case is the same domain, and
a domain names one tenant at most (409 `tenant_conflict`, as a taken slug is). A tenant is
created in one call of `create_tenant()` (edgemart/sql): the tenant, its domains, a copy of the
default tenant's categories with ids of its own, its kill switches (off) and an audit row in
its own audit log, all or nothing. A domain change is audited in the tenant's audit log in the
transaction that makes it, then announced to every process's tenant directory
(`Services.tenant_directory_changed`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgemart.appfactory import build_app, lambda_handler
from edgemart.cache import NO_STORE
from edgemart.db import Connection
from edgemart.errors import ProblemError
from edgemart.requestid import current_request_id
from edgemart.requestinputs import inputs_of
from edgemart.routing import by_name, starlette_routes
from edgemart.services import services_of
from edgemart.tenancy import SET_TENANT_SQL
from edgemart.validation import ValidationError, field_error


class TenantNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "tenant_not_found", "Tenant not found", headers=NO_STORE)


class TenantConflictError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(409, "tenant_conflict", "Tenant conflict", detail, headers=NO_STORE)


SLUG_TAKEN = "Another tenant has this slug"
DOMAIN_TAKEN = "A domain is another tenant's: {domains}"


def host_names(sent: Iterable[str]) -> list[str]:
    """The body's `domains` lower-cased (their form was checked against the route table's
    host-name pattern); listing one twice, in any case, is a mistake worth saying."""
    domains = [domain.lower() for domain in sent]
    repeated = sorted({domain for domain in domains if domains.count(domain) > 1})
    if repeated:
        message = f"lists {', '.join(repeated)} more than once"
        raise ValidationError([field_error("domains", "body", message)])
    return domains


CREATE_SQL = b"SELECT create_tenant(%s, %s, %s::text[], %s, %s, %s) AS tenant"
TENANT_SQL = b"SELECT tenant_json(t) AS tenant FROM tenants t WHERE slug = %s"
TAKEN_DOMAINS_SQL = b"SELECT domain FROM tenant_domains WHERE domain = ANY(%s::text[]) ORDER BY 1"


async def create_tenant(request: Request) -> Response:
    inputs = inputs_of(request)
    slug = inputs.body.value("slug", str)
    name = inputs.body.value("name", str)
    domains = host_names(inputs.body.value("domains", list))
    fee = inputs.body.optional("platform_fee_bps", int)
    services = services_of(request)
    args = [slug, name, domains, fee, inputs.caller.sub, current_request_id()]
    async with services.primary.connection() as conn:
        try:
            row = await (await conn.execute(CREATE_SQL, args)).fetchone()
        except psycopg.errors.UniqueViolation as taken:
            if taken.diag.table_name == "tenants":
                raise TenantConflictError(SLUG_TAKEN) from None
            others = await (await conn.execute(TAKEN_DOMAINS_SQL, [domains])).fetchall()
            names = ", ".join(other["domain"] for other in others)
            raise TenantConflictError(DOMAIN_TAKEN.format(domains=names)) from None
    if row is None:
        raise RuntimeError("create_tenant() returned no row")
    await services.tenant_directory_changed()
    headers = {**NO_STORE, "Location": f"/platform/tenants/{slug}"}
    return JSONResponse(row["tenant"], status_code=201, headers=headers)


async def get_tenant(request: Request) -> Response:
    slug = inputs_of(request).path.value("slug", str)
    async with services_of(request).primary.connection() as conn:
        row = await (await conn.execute(TENANT_SQL, [slug])).fetchone()
    if row is None:
        raise TenantNotFoundError()
    return JSONResponse(row["tenant"], headers=NO_STORE)


ADD_DOMAINS_SQL = b"""
INSERT INTO tenant_domains (domain, tenant_id)
SELECT domain, %(tenant)s FROM unnest(%(domains)s::text[]) AS domain
ON CONFLICT (domain) DO NOTHING
RETURNING domain
"""
# After the insert, which waited for any other transaction adding the same domain to finish.
OTHERS_DOMAINS_SQL = b"""
SELECT domain FROM tenant_domains
WHERE domain = ANY(%(domains)s::text[]) AND tenant_id <> %(tenant)s
ORDER BY domain
"""
REMOVE_DOMAINS_SQL = b"""
DELETE FROM tenant_domains
WHERE tenant_id = %(tenant)s AND domain <> ALL(%(domains)s::text[])
RETURNING domain
"""
AUDIT_SQL = b"""
INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details, request_id)
VALUES (%s, 'tenant.domains', 'tenant', %s, %s::jsonb, %s)
"""


async def put_tenant_domains(request: Request) -> Response:
    inputs = inputs_of(request)
    slug = inputs.path.value("slug", str)
    domains = host_names(inputs.body.value("domains", list))
    services = services_of(request)
    async with services.primary.connection() as conn, conn.transaction():
        tenant = await _locked_tenant(conn, slug)
        names = {"tenant": tenant, "domains": domains}
        added = await _domains(conn, ADD_DOMAINS_SQL, names)
        others = await _domains(conn, OTHERS_DOMAINS_SQL, names)
        if others:
            raise TenantConflictError(DOMAIN_TAKEN.format(domains=", ".join(others)))
        removed = await _domains(conn, REMOVE_DOMAINS_SQL, names)
        if added or removed:
            # Into the tenant's own audit log: its rows are the tenant's (row-level security).
            await conn.execute(SET_TENANT_SQL, [str(tenant)])
            details = {"added": sorted(added), "removed": sorted(removed), "domains": domains}
            await conn.execute(
                AUDIT_SQL,
                [inputs.caller.sub, str(tenant), json.dumps(details), current_request_id()],
            )
        row = await (await conn.execute(TENANT_SQL, [slug])).fetchone()
    if row is None:
        raise RuntimeError("a tenant locked in this transaction is gone")
    if added or removed:
        await services.tenant_directory_changed()
    return JSONResponse(row["tenant"], headers=NO_STORE)


async def _locked_tenant(conn: Connection, slug: str) -> Any:
    """The tenant's id, its row locked so that its domain changes take turns; else 404."""
    row = await (
        await conn.execute(b"SELECT id FROM tenants WHERE slug = %s FOR UPDATE", [slug])
    ).fetchone()
    if row is None:
        raise TenantNotFoundError()
    return row["id"]


async def _domains(conn: Connection, statement: bytes, names: dict[str, Any]) -> list[str]:
    rows = await (await conn.execute(statement, names)).fetchall()
    return [row["domain"] for row in rows]


routes = starlette_routes("platform", by_name(create_tenant, get_tenant, put_tenant_domains))
app = build_app(routes)
handler = lambda_handler(app, "platform")
