import pytest

from edgemart.validation import InvalidJsonError, JsonObject, ValidationError, parse_json


@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"NaN", b'{"a": NaN}', b"\xff\xfe", b"[1,]"])
def test_not_json_is_400(body: bytes) -> None:
    with pytest.raises(InvalidJsonError) as raised:
        parse_json(body)
    assert raised.value.status == 400 and raised.value.code == "invalid_json"


def test_strict_types() -> None:
    body = JsonObject({"quantity": "1", "flag": "yes", "price": 1.5, "name": 3, "extra": 1})
    body.integer("quantity", required=True, low=1, high=10)
    body.boolean("flag")
    body.integer("price")
    body.text("name", max_length=10)
    body.text("missing", required=True, max_length=10)
    with pytest.raises(ValidationError) as raised:
        body.finish()
    fields = {error["field"]: error["message"] for error in raised.value.errors}
    assert fields == {
        "quantity": "must be an integer",
        "flag": "must be true or false",
        "price": "must be an integer",
        "name": "must be a string",
        "missing": "is required",
        "extra": "unknown field",
    }


def test_booleans_are_not_integers_and_bounds_hold() -> None:
    body = JsonObject({"quantity": True, "stock": -1})
    body.integer("quantity")
    body.integer("stock", low=0)
    with pytest.raises(ValidationError) as raised:
        body.finish()
    assert [e["field"] for e in raised.value.errors] == ["quantity", "stock"]


def test_valid_object_passes() -> None:
    body = JsonObject({"quantity": 2, "name": "x", "ok": False})
    assert body.integer("quantity", low=1, high=10) == 2
    assert body.text("name", max_length=5) == "x"
    assert body.boolean("ok") is False
    body.finish()
