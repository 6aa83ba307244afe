import pytest

from edgemart.cursor import decode_cursor, encode_cursor, query_fingerprint
from edgemart.validation import ValidationError

KEY = b"k" * 32


def test_round_trip() -> None:
    fingerprint = query_fingerprint("chair", None, 100, None, "price_asc")
    cursor = encode_cursor(KEY, fingerprint, ["1999", "0b8e1c2e-0000-4000-8000-000000000000"])
    assert decode_cursor(KEY, fingerprint, cursor, length=2) == [
        "1999",
        "0b8e1c2e-0000-4000-8000-000000000000",
    ]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c[:-2] + ("A" if c[-2] != "A" else "B") + c[-1],  # signature changed
        lambda c: ("x" if c[0] != "x" else "y") + c[1:],  # payload changed
        lambda c: c.split(".")[0],  # signature dropped
        lambda c: c + ".extra",
        lambda c: "not a cursor",
        lambda c: "",
        lambda c: "%%%.%%%",
    ],
)
def test_modified_cursors_are_422(mutate) -> None:  # type: ignore[no-untyped-def]
    fingerprint = query_fingerprint("chair")
    cursor = encode_cursor(KEY, fingerprint, ["1"])
    with pytest.raises(ValidationError) as raised:
        decode_cursor(KEY, fingerprint, mutate(cursor), length=1)
    assert raised.value.status == 422 and raised.value.errors[0]["field"] == "cursor"


def test_a_cursor_of_another_query_or_key_is_refused() -> None:
    cursor = encode_cursor(KEY, query_fingerprint("chair"), ["1"])
    with pytest.raises(ValidationError):
        decode_cursor(KEY, query_fingerprint("lamp"), cursor, length=1)
    with pytest.raises(ValidationError):
        decode_cursor(b"other" * 8, query_fingerprint("chair"), cursor, length=1)


def test_each_tenant_signs_with_its_own_key_and_the_default_with_the_secret() -> None:
    from edgemart.cursor import cursor_key
    from edgemart.tenancy import DEFAULT_TENANT
    from tests.support.tenants import ACME, GLOBEX

    assert cursor_key("secret") == cursor_key("secret", DEFAULT_TENANT) == b"secret"
    keys = {cursor_key("secret", tenant) for tenant in (DEFAULT_TENANT, ACME, GLOBEX)}
    assert len(keys) == 3
    assert cursor_key("secret", ACME) == cursor_key("secret", ACME.id)  # stable
    assert cursor_key("other", ACME) != cursor_key("secret", ACME)


def test_a_cursor_minted_for_one_tenant_is_422_in_another() -> None:
    from edgemart.cursor import cursor_key
    from edgemart.tenancy import DEFAULT_TENANT
    from tests.support.tenants import ACME, GLOBEX

    fingerprint = query_fingerprint("store", "shoes", None)
    cursor = encode_cursor(cursor_key("secret", ACME), fingerprint, ["2024", "id"])
    assert decode_cursor(cursor_key("secret", ACME), fingerprint, cursor, length=2) == [
        "2024",
        "id",
    ]
    for other in (GLOBEX, DEFAULT_TENANT):
        with pytest.raises(ValidationError):
            decode_cursor(cursor_key("secret", other), fingerprint, cursor, length=2)
