import ipaddress

from edgemart.clientip import client_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def scope(peer: str, **headers: str) -> dict[str, object]:
    return {
        "client": (peer, 1234),
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }


def test_peer_address_without_trusted_proxies() -> None:
    assert client_ip(scope("198.51.100.1", X_Forwarded_For="1.2.3.4"), ()) == "198.51.100.1"


def test_forged_headers_from_an_untrusted_peer_are_ignored() -> None:
    forged = scope("198.51.100.1", CF_Connecting_IP="1.2.3.4", X_Forwarded_For="5.6.7.8")
    assert client_ip(forged, PROXIES) == "198.51.100.1"


def test_cloudfront_viewer_address_from_a_trusted_proxy() -> None:
    trusted = scope("10.1.2.3", CloudFront_Viewer_Address="203.0.113.9:46532")
    assert client_ip(trusted, PROXIES) == "203.0.113.9"
    ipv6 = scope("10.1.2.3", CloudFront_Viewer_Address="2001:db8::1:46532")
    assert client_ip(ipv6, PROXIES) == "2001:db8::1"


def test_rightmost_untrusted_forwarded_hop() -> None:
    chain = scope("10.1.2.3", X_Forwarded_For="6.6.6.6, 203.0.113.9, 10.9.9.9")
    assert client_ip(chain, PROXIES) == "203.0.113.9"


def test_garbage_forwarded_header_falls_back_to_peer() -> None:
    assert client_ip(scope("10.1.2.3", X_Forwarded_For="nonsense"), PROXIES) == "10.1.2.3"


def test_no_client_in_scope() -> None:
    assert client_ip({"headers": []}, PROXIES) is None
