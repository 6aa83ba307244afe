"""The live-update protocol's frames (edgemart.live.protocol), pure."""

from __future__ import annotations

import json
import uuid

import pytest

from edgemart.live.protocol import (
    INVALID_LIMIT,
    INVALID_WINDOW_S,
    MAX_FRAME_BYTES,
    InvalidFrames,
    InvalidMessageError,
    error_frame,
    parse_frame,
    stock_frame,
)

ID = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"


def test_actions_parse_to_messages_with_canonical_channels() -> None:
    subscribe = parse_frame(json.dumps({"action": "subscribe", "channel": f"order:{ID.upper()}"}))
    assert subscribe.channel is not None and subscribe.channel.name == f"order:{ID}"
    assert parse_frame('{"action": "ping"}').action == "ping"
    assert parse_frame('{"action": "auth", "token": "t"}').token == "t"
    assert parse_frame(json.dumps({"action": "unsubscribe", "channel": f"product:{ID}"})).channel


@pytest.mark.parametrize(
    "frame",
    [
        None,
        b'{"action": "ping"}',
        "",
        "not json",
        "[]",
        "1",
        '{"action": "dance"}',
        '{"action": "auth"}',
        '{"action": "auth", "token": 5}',
        '{"action": "subscribe"}',
        '{"action": "subscribe", "channel": 7}',
        f'{{"action": "subscribe", "channel": "store:{ID}"}}',
        '{"action": "subscribe", "channel": "order:123"}',
        f'{{"action": "subscribe", "channel": "order:{ID.replace("-", "")}"}}',
        json.dumps({"action": "ping", "pad": "x" * MAX_FRAME_BYTES}),
        json.dumps({"action": "ping", "pad": "é" * (MAX_FRAME_BYTES // 2)}),  # bytes, not chars
    ],
)
def test_frames_the_protocol_refuses(frame: str | bytes | None) -> None:
    with pytest.raises(InvalidMessageError):
        parse_frame(frame)


def test_a_refused_channel_is_echoed_when_it_was_a_string() -> None:
    with pytest.raises(InvalidMessageError) as refused:
        parse_frame('{"action": "subscribe", "channel": "order:123"}')
    assert refused.value.channel == "order:123"
    assert json.loads(error_frame("invalid_message", "order:123")) == {
        "type": "error",
        "code": "invalid_message",
        "channel": "order:123",
    }


def test_stock_frames_say_whether_the_product_is_in_stock() -> None:
    assert json.loads(stock_frame(f"product:{ID}", ID, 0))["data"] == {
        "product_id": ID,
        "stock_available": 0,
        "in_stock": False,
    }


def test_a_flood_is_invalid_frames_in_quick_succession_only() -> None:
    slow, fast = InvalidFrames(), InvalidFrames()
    assert not any(slow.note(i * INVALID_WINDOW_S) for i in range(3 * INVALID_LIMIT))
    noted = [fast.note(i * 0.01) for i in range(INVALID_LIMIT)]
    assert noted == [False] * (INVALID_LIMIT - 1) + [True]


def test_uuid_forms_other_than_the_hyphenated_one_are_refused() -> None:
    braces = "{" + str(uuid.UUID(ID)) + "}"
    with pytest.raises(InvalidMessageError):
        parse_frame(json.dumps({"action": "subscribe", "channel": f"product:{braces}"}))
