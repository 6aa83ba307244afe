"""The client's IP address, believing forwarding headers only from trusted proxies.

By default the client is the TCP peer (in Lambda, the API Gateway event's source IP, which
Mangum puts in the ASGI scope). Only when that peer lies in `TRUSTED_PROXIES` do we read the
CDN's client-IP header: `CloudFront-Viewer-Address`, then `CF-Connecting-IP`, then the
right-most `X-Forwarded-For` hop that is not itself a trusted proxy. Anyone else sending these
headers is ignored, so no client can choose its own rate-limit key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

from edgemart.settings import IPNetwork


def peer_is_trusted(scope: Scope, trusted_proxies: Sequence[IPNetwork]) -> bool:
    """Whether the TCP peer lies in `trusted_proxies`: the one rule for believing any header
    a proxy sets (the client's address here, the viewer's host in edgemart.tenantresolution)."""
    peer = scope.get("client")
    return bool(peer and trusted_proxies and _is_trusted(str(peer[0]), trusted_proxies))


def client_ip(scope: Scope, trusted_proxies: Sequence[IPNetwork]) -> str | None:
    peer = scope.get("client")
    peer_ip: str | None = str(peer[0]) if peer else None
    if peer_ip is None or not peer_is_trusted(scope, trusted_proxies):
        return peer_ip
    headers = {name: value for name, value in scope.get("headers", ())}
    viewer = _header(headers, b"cloudfront-viewer-address")
    if viewer is not None:
        address = _parse_ip(viewer.rsplit(":", 1)[0].strip("[]"))
        if address is not None:
            return address
    connecting = _header(headers, b"cf-connecting-ip")
    if connecting is not None:
        address = _parse_ip(connecting)
        if address is not None:
            return address
    forwarded = _header(headers, b"x-forwarded-for")
    if forwarded is not None:
        for hop in reversed(forwarded.split(",")):
            address = _parse_ip(hop)
            if address is None:
                break
            if not _is_trusted(address, trusted_proxies):
                return address
    return peer_ip


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1").strip() if value else None


def _parse_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _is_trusted(address: str, trusted_proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)
