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
