"""Which tenant a request is for, in multi mode: the host it was sent to (decision 0041).

The host is the `Host` header, or, when the TCP peer is one of `TRUSTED_PROXIES` (the same
rule that lets a proxy name the client's address, edgemart.clientip), the viewer's host the
proxy forwards: `CloudFront-Viewer-Host` (CloudFront sets it itself, whatever the viewer
sent), else the right-most `X-Forwarded-Host` (the value the trusted peer itself added). A
Lambda event without a `Host` header falls back to the API's domain in its request context.
Anyone else's forwarding headers are ignored, so no client can pick another tenant's host.

`host_key` turns a header into the key `tenant_domains` is looked up by: lower-case, the port
and one trailing dot removed, an IPv6 literal in its compressed form without brackets, and
None for anything no domain can be (a junk host is unknown without asking the database).
It is pure; the lookups, cached per process, are edgemart.tenantdirectory's.

`TenantResolver.resolve` is the request-context middleware's step: paths that belong to no
tenant (`edgemart.tenancy.TENANTLESS_PATHS`) resolve nothing; any other path's host must name
a tenant, else 404 `tenant_not_found`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Final

from starlette.types import Scope

from edgemart.clientip import peer_is_trusted
from edgemart.errors import TenantNotFoundError
from edgemart.settings import IPNetwork
from edgemart.tenancy import Tenant, is_tenant_scoped
from edgemart.tenantdirectory import MISS

if TYPE_CHECKING:
    from edgemart.tenantdirectory import TenantDirectory

MAX_HOST_LENGTH: Final = 253
"""The longest domain name DNS can carry (and tenant_domains' CHECK)."""
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN: Final = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
"""Dot-separated DNS labels (RFC 1123): letters, digits and inner hyphens, 1 to 63 each. IDNs
arrive as their ASCII `xn--` form; an IPv4 address passes as four numeric labels. One
pattern rather than a match per label: this runs on every request in multi mode."""


def host_key(value: str) -> str | None:
    """The `tenant_domains` key of a `Host`-style value (`Shop.Example.com:8443`,
    `[::1]:8000`), or None when it cannot name a domain."""
    text = value.strip().lower()
    if text.startswith("["):
        return _ipv6_key(text)
    name = text
    if ":" in text:
        name, _, port = text.rpartition(":")
        if not _is_port(port):
            return None
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_HOST_LENGTH:
        return None
    return name if _DOMAIN.fullmatch(name) else None


def _ipv6_key(text: str) -> str | None:
    """`[address]` or `[address]:port`: the address compressed, without brackets."""
    end = text.find("]")
    if end < 0:
        return None
    rest = text[end + 1 :]
    if rest and (rest[0] != ":" or not _is_port(rest[1:])):
        return None
    try:
        return ipaddress.IPv6Address(text[1:end]).compressed
    except ValueError:
        return None


def _is_port(text: str) -> bool:
    """RFC 3986's `port` (any digits, or none), within what TCP can have."""
    if text == "":
        return True
    return len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= 65535


def request_host(scope: Scope, trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """The host the request was sent to, as a `tenant_domains` key (see the module
    docstring); None when it names none. Two `Host` headers name none: which one a proxy in
    front read cannot be known."""
    host: bytes | None = None
    viewer: bytes | None = None
    forwarded: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"cloudfront-viewer-host":
            viewer = value
        elif name == b"x-forwarded-host":
            forwarded = value
    if (viewer is not None or forwarded is not None) and peer_is_trusted(scope, trusted_proxies):
        if viewer is not None:
            return host_key(viewer.decode("latin-1"))
        assert forwarded is not None
        return host_key(forwarded.decode("latin-1").rsplit(",", 1)[-1])
    if host is not None:
        return host_key(host.decode("latin-1"))
    return _event_domain(scope)


def _event_domain(scope: Scope) -> str | None:
    """An API Gateway event's own domain (`requestContext.domainName`: the custom domain or
    the execute-api one), for an event that carries no `Host` header."""
    event = scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    context = event.get("requestContext")
    domain = context.get("domainName") if isinstance(context, dict) else None
    return host_key(domain) if isinstance(domain, str) else None


class TenantResolver:
    """Multi mode's step in the request-context middleware, before the rate limiter (whose
    keys carry the tenant). The directory is read from the app's services on each request,
    as the rate limiter is, so tests can hand an app services of their own."""

    __slots__ = ("trusted_proxies",)

    def __init__(self, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self.trusted_proxies = tuple(trusted_proxies)

    def resolve(self, scope: Scope) -> Tenant | Awaitable[Tenant] | None:
        """The request's tenant; an awaitable of it when the directory must ask the
        database; None on a path that belongs to no tenant. Raises `TenantNotFoundError`
        (404) for a host no tenant owns."""
        if not is_tenant_scoped(scope["path"]):
            return None
        directory: TenantDirectory | None = scope["app"].state.services.tenant_directory
        if directory is None:  # services of a single-mode deployment
            return None
        host = request_host(scope, self.trusted_proxies)
        if host is None:
            raise TenantNotFoundError()
        cached = directory.cached(host)
        if cached is MISS:
            return _loaded(directory, host)
        if cached is None:
            raise TenantNotFoundError()
        return cached


async def _loaded(directory: TenantDirectory, host: str) -> Tenant:
    tenant = await directory.load(host)
    if tenant is None:
        raise TenantNotFoundError()
    return tenant
