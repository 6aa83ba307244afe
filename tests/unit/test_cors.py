import pytest

from edgemart.cors import CorsPolicy, is_preflight, normalised_origin


def scope_with(method: str, headers: dict[str, str]) -> dict[str, object]:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "method": method, "headers": raw}


def test_no_origins_means_no_policy() -> None:
    assert CorsPolicy.from_origins(()) is None


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443", "https://shop.example"),
        ("http://shop.example:80", "http://shop.example"),
        ("https://shop.example:8443", "https://shop.example:8443"),
        ("http://localhost:3000", "http://localhost:3000"),
    ],
)
def test_origins_are_compared_as_browsers_send_them(configured: str, expected: str) -> None:
    assert normalised_origin(configured) == expected


def test_only_a_configured_origin_is_allowed_and_echoed_as_sent() -> None:
    policy = CorsPolicy.from_origins(["https://shop.example:443", "http://localhost:3000"])
    assert policy is not None
    allowed = policy.allowed_origin(scope_with("GET", {"Origin": "https://SHOP.example"}))
    assert allowed == b"https://SHOP.example"
    for origin in (
        "https://evil.example",
        "null",
        "https://shop.example.evil",
        "http://shop.example",
    ):
        assert policy.allowed_origin(scope_with("GET", {"Origin": origin})) is None
    assert policy.allowed_origin(scope_with("GET", {})) is None


def test_a_preflight_is_an_options_request_naming_a_method() -> None:
    assert is_preflight(scope_with("OPTIONS", {"Access-Control-Request-Method": "POST"}))
    assert not is_preflight(scope_with("OPTIONS", {}))
    assert not is_preflight(scope_with("GET", {"Access-Control-Request-Method": "POST"}))
