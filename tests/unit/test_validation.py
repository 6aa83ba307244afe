"""The input rules: strict JSON, media types, the text rule. How a route's inputs are held to
its table entry is tests/unit/test_requestinputs.py."""

import pytest

from edgemart.validation import (
    InvalidJsonError,
    is_clean_identifier,
    is_json_media_type,
    parse_json,
    text_problem,
)


@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"NaN", b'{"a": NaN}', b"\xff\xfe", b"[1,]"])
def test_not_json_is_400(body: bytes) -> None:
    with pytest.raises(InvalidJsonError) as raised:
        parse_json(body)
    assert raised.value.status == 400 and raised.value.code == "invalid_json"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nesting_is_bounded_at_32_levels() -> None:
    assert parse_json(nested(32)) is not None
    for depth in (33, 1000, 100_000):
        with pytest.raises(InvalidJsonError):
            parse_json(nested(depth))
    assert parse_json(b'{"a": ' + nested(31) + b"}") is not None
    with pytest.raises(InvalidJsonError):
        parse_json(b'{"a": ' + nested(32) + b"}")


@pytest.mark.parametrize("number", [b"9" * 21, b"-" + b"9" * 21, b"9" * 5000, b"1e999", b"-1e999"])
def test_numbers_out_of_range_are_400(number: bytes) -> None:
    with pytest.raises(InvalidJsonError) as raised:
        parse_json(b'{"n": ' + number + b"}")
    assert raised.value.detail == "A number in the request body is out of range"


def test_twenty_digit_integers_and_finite_floats_parse() -> None:
    assert parse_json(b'{"n": 99999999999999999999, "f": 1e300}') == {
        "n": 99999999999999999999,
        "f": 1e300,
    }


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ('application/json; charset="UTF-8"', True),
        ("APPLICATION/JSON", True),
        ("application/problem+json", True),
        ("application/json; charset=latin-1", False),
        ("text/plain", False),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonp", False),
        ("", False),
        (None, False),
    ],
)
def test_json_media_types(content_type: str | None, accepted: bool) -> None:
    assert is_json_media_type(content_type) is accepted


@pytest.mark.parametrize(
    ("text", "single_line", "multi_line"),
    [
        ("plain words", None, None),
        ("émoji 😀 ok", None, None),
        ("nul\x00", "unstorable", "unstorable"),
        ("\ud800", "unstorable", "unstorable"),
        ("a\udc00b", "unstorable", "unstorable"),
        ("tab\there", "control", None),
        ("line\nbreak\r\n", "control", None),
        ("unit\x1fseparator", "control", "control"),
        ("bell\x07", "control", "control"),
        ("del\x7f", "control", "control"),
        ("c1\x85", "control", "control"),
    ],
)
def test_text_rule(text: str, single_line: str | None, multi_line: str | None) -> None:
    kinds = {
        None: None,
        "unstorable": "must be valid Unicode text without NUL characters",
        "control": "must not contain control characters",
    }
    assert text_problem(text) == kinds[single_line]
    assert text_problem(text, multiline=True) == kinds[multi_line]
    assert is_clean_identifier(text) is (single_line is None)
