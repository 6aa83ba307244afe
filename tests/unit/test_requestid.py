import pytest

from edgemart.requestid import incoming_request_id, is_valid_request_id, new_request_id


@pytest.mark.parametrize(
    "value", ["abc", "A-b_c.9", "x" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"]
)
def test_well_formed_ids_are_accepted(value: str) -> None:
    assert is_valid_request_id(value)


@pytest.mark.parametrize(
    "value", ["", "x" * 129, "has space", "line\nbreak", "semi;colon", "ünïcode", "a/b"]
)
def test_malformed_ids_are_rejected(value: str) -> None:
    assert not is_valid_request_id(value)


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_request_id(value) for value in ids)


def test_incoming_header_is_read_from_raw_scope_headers() -> None:
    scope = {"headers": [(b"x-request-id", b"abc-123")]}
    assert incoming_request_id(scope) == "abc-123"
    assert incoming_request_id({"headers": [(b"x-request-id", b"bad id")]}) is None
    assert incoming_request_id({"headers": [(b"x-request-id", "é".encode())]}) is None
    assert incoming_request_id({"headers": []}) is None
