"""The request's host as a tenant_domains key, and whose forwarding headers are believed."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from edgemart.tenancy import is_tenant_scoped
from edgemart.tenantresolution import MAX_HOST_LENGTH, host_key, request_host

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def scope(peer: str | None, *headers: tuple[str, str], event: Any = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "client": (peer, 1234) if peer else None,
        "headers": [(name.lower().encode(), value.encode("latin-1")) for name, value in headers],
    }
    if event is not None:
        found["aws.event"] = event
    return found


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("shop.example.com", "shop.example.com"),
        ("Shop.EXAMPLE.com", "shop.example.com"),
        ("shop.example.com:8443", "shop.example.com"),
        ("shop.example.com:", "shop.example.com"),  # RFC 3986 allows an empty port
        ("shop.example.com.", "shop.example.com"),  # the same name, fully qualified
        ("  shop.example.com  ", "shop.example.com"),
        ("localhost", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("[::1]", "::1"),
        ("[::1]:8000", "::1"),
        ("[2001:DB8:0:0::1]:443", "2001:db8::1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_a_host_becomes_its_lookup_key(value: str, key: str) -> None:
    assert host_key(value) == key


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        ":8000",
        ".",
        "shop..example.com",
        "-shop.example.com",
        "shop-.example.com",
        "shop_example.com",
        "shop.example.com:port",
        "shop.example.com:65536",
        "shop.example.com:123456",
        "shop.example.com:８０",  # full-width digits are digits to str.isdigit
        "shop.example.com/path",
        "user@shop.example.com",
        "shop.example.com, evil.example",
        "bücher.example",  # an IDN arrives in its xn-- form
        "::1",  # an IPv6 literal needs its brackets
        "[::1",
        "[::1]x",
        "[::1]:x",
        "[not-an-address]",
        "a" * 64 + ".example",  # a label of 64
        "a." * 126 + "ab",  # 254 characters
    ],
)
def test_junk_names_no_host(value: str) -> None:
    assert host_key(value) is None


def test_the_longest_domain_passes() -> None:
    name = ".".join(["a" * 63] * 3 + ["a" * 61])
    assert len(name) == MAX_HOST_LENGTH
    assert host_key(name) == name
    assert host_key(name + "a") is None


def test_the_host_header_names_the_host() -> None:
    assert request_host(scope("198.51.100.1", ("Host", "Shop.Example.com:80")), PROXIES) == (
        "shop.example.com"
    )


def test_forwarded_hosts_from_an_untrusted_peer_are_ignored() -> None:
    forged = scope(
        "198.51.100.1",
        ("Host", "shop.example.com"),
        ("X-Forwarded-Host", "other.example.com"),
        ("CloudFront-Viewer-Host", "other.example.com"),
    )
    assert request_host(forged, PROXIES) == "shop.example.com"
    # No proxies trusted at all: the same, whatever the peer.
    assert request_host({**forged, "client": ("10.1.2.3", 1)}, ()) == "shop.example.com"


def test_a_trusted_peer_names_the_viewer_s_host() -> None:
    viewer = scope(
        "10.1.2.3",
        ("Host", "origin.internal"),
        ("X-Forwarded-Host", "spoofed.example.com"),
        ("CloudFront-Viewer-Host", "Shop.Example.com"),
    )
    # CloudFront sets CloudFront-Viewer-Host itself; X-Forwarded-Host it may pass through.
    assert request_host(viewer, PROXIES) == "shop.example.com"
    forwarded = scope(
        "10.1.2.3",
        ("Host", "origin.internal"),
        ("X-Forwarded-Host", "spoofed.example.com, shop.example.com:443"),
    )
    # The right-most value is the one the trusted peer added.
    assert request_host(forwarded, PROXIES) == "shop.example.com"


def test_a_junk_forwarded_host_from_a_trusted_peer_names_none() -> None:
    junk = scope("10.1.2.3", ("Host", "shop.example.com"), ("X-Forwarded-Host", "not a host"))
    assert request_host(junk, PROXIES) is None


def test_two_host_headers_name_none() -> None:
    twice = scope("198.51.100.1", ("Host", "shop.example.com"), ("Host", "other.example.com"))
    assert request_host(twice, PROXIES) is None


def test_no_host_at_all_names_none() -> None:
    assert request_host(scope("198.51.100.1"), PROXIES) is None
    assert request_host(scope(None), PROXIES) is None


def test_a_lambda_event_without_host_falls_back_to_its_api_domain() -> None:
    event = {"requestContext": {"domainName": "API.example.com"}}
    assert request_host(scope("192.168.0.1", event=event), PROXIES) == "api.example.com"
    # The Host header, when the event has one, is the host.
    with_host = scope("192.168.0.1", ("Host", "shop.example.com"), event=event)
    assert request_host(with_host, PROXIES) == "shop.example.com"
    assert request_host(scope("192.168.0.1", event={"requestContext": []}), PROXIES) is None


@pytest.mark.parametrize(
    ("path", "scoped"),
    [
        ("/health", False),
        ("/health/live", False),
        ("/platform/tenants", False),
        ("/platform", False),
        ("/metrics", False),
        ("/healthz", True),
        ("/platforms", True),
        ("/openapi.json", True),
        ("/docs", True),
        ("/marketplace/home", True),
        ("/", True),
    ],
)
def test_which_paths_belong_to_a_tenant(path: str, scoped: bool) -> None:
    assert is_tenant_scoped(path) is scoped
