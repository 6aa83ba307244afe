"""Tenants for tests of tenant-scoped keys, and a wrapper app that serves each host as its
tenant (the way the resolution middleware leaves it in `scope["state"]["tenant"]`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from edgemart.tenancy import DEFAULT_TENANT, TENANT_STATE_KEY, Tenant

ACME = Tenant(uuid.UUID("5b17b966-2f07-43c8-86bb-e9e870ef55b1"), "acme")
GLOBEX = Tenant(uuid.UUID("0c6a4a35-8f5e-4b5c-9d0b-5c1f7f3e2a10"), "globex")


def tenant_scope(tenant: Tenant = DEFAULT_TENANT, **scope: object) -> dict[str, object]:
    """A scope whose request the middleware resolved to `tenant`."""
    return {**scope, "state": {TENANT_STATE_KEY: tenant}}


class TenantsByHost:
    """Puts the tenant of the request's host (port ignored) in the scope's state, before the
    app runs; a host it does not know is left to the app (the default tenant)."""

    def __init__(self, app: ASGIApp, tenants: Mapping[str, Tenant]) -> None:
        self.app = app
        self.tenants = dict(tenants)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode().rsplit(":", 1)[0]
            tenant = self.tenants.get(host.lower())
            if tenant is not None:
                scope.setdefault("state", {})[TENANT_STATE_KEY] = tenant
        await self.app(scope, receive, send)
