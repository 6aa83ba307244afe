"""The live-update message protocol (docs/live-updates.md), pure: what a client frame asks
for, and the frames the server answers with. The gateway's `/ws` and the AWS WebSocket API's
function speak it through the same functions, so a client written against one works against
the other.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

MAX_FRAME_BYTES: Final = 4096
MAX_SUBSCRIPTIONS: Final = 50
STOCK_COALESCE_S: Final = 0.25
"""At most one stock message per product per this many seconds, carrying the latest value."""
INVALID_LIMIT: Final = 10
INVALID_WINDOW_S: Final = 10.0
"""A client that sends INVALID_LIMIT invalid frames within INVALID_WINDOW_S is closed (1008)."""

CLOSE_POLICY: Final = 1008
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_NORMAL: Final = 1000

Kind = Literal["order", "product"]
KINDS: Final[tuple[Kind, ...]] = ("order", "product")
ACTIONS: Final = ("auth", "subscribe", "unsubscribe", "ping")

INVALID_MESSAGE: Final = "invalid_message"
UNAUTHORIZED: Final = "unauthorized"
TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
NOT_FOUND: Final[dict[Kind, str]] = {"order": "order_not_found", "product": "product_not_found"}


@dataclass(frozen=True, slots=True)
class Channel:
    kind: Kind
    id: uuid.UUID

    @property
    def name(self) -> str:
        """The canonical spelling, as every server message names it."""
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class ClientMessage:
    action: str
    channel: Channel | None = None
    token: str | None = None


class InvalidMessageError(ValueError):
    """A frame the protocol does not allow; `channel` is echoed when it was a string."""

    def __init__(self, reason: str, channel: str | None = None) -> None:
        super().__init__(reason)
        self.channel = channel


def parse_channel(text: object) -> Channel:
    if not isinstance(text, str):
        raise InvalidMessageError("channel must be a string")
    kind, _, identifier = text.partition(":")
    if kind not in KINDS:
        raise InvalidMessageError("unknown channel kind", text)
    try:
        parsed = uuid.UUID(identifier)
    except ValueError:
        raise InvalidMessageError("channel id is not a UUID", text) from None
    if len(identifier) != 36:  # only the hyphenated form, as every id in the API is written
        raise InvalidMessageError("channel id is not a UUID", text)
    return Channel(kind, parsed)


def parse_frame(frame: str | bytes | None) -> ClientMessage:
    """A client frame as a message, or InvalidMessageError: binary frames, frames over
    MAX_FRAME_BYTES, anything but a JSON object, an unknown action, a bad channel or token."""
    if not isinstance(frame, str):
        raise InvalidMessageError("frames are JSON text")
    if len(frame) > MAX_FRAME_BYTES or len(frame.encode()) > MAX_FRAME_BYTES:
        raise InvalidMessageError("frame too large")
    try:
        document = json.loads(frame)
    except ValueError:
        raise InvalidMessageError("not JSON") from None
    if not isinstance(document, dict):
        raise InvalidMessageError("not a JSON object")
    action = document.get("action")
    if action not in ACTIONS:
        raise InvalidMessageError("unknown action")
    if action == "auth":
        token = document.get("token")
        if not isinstance(token, str) or not token:
            raise InvalidMessageError("auth needs a token")
        return ClientMessage("auth", token=token)
    if action in ("subscribe", "unsubscribe"):
        return ClientMessage(action, channel=parse_channel(document.get("channel")))
    return ClientMessage("ping")


def _frame(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def error_frame(code: str, channel: str | None = None) -> str:
    document: dict[str, Any] = {"type": "error", "code": code}
    if channel is not None:
        document["channel"] = channel
    return _frame(document)


PONG: Final = _frame({"type": "pong"})


def order_frame(channel: str, order: Any) -> str:
    return _frame({"type": "order", "channel": channel, "data": order})


def stock_frame(channel: str, product_id: str, stock: int) -> str:
    data = {"product_id": product_id, "stock_available": stock, "in_stock": stock > 0}
    return _frame({"type": "stock", "channel": channel, "data": data})


class InvalidFrames:
    """Counts a socket's invalid frames in a sliding window (the caller passes the time)."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] | None = None

    def note(self, now: float) -> bool:
        """Record one; True when the client has now sent too many (close it with 1008)."""
        if self._times is None:
            self._times = deque(maxlen=INVALID_LIMIT)
        self._times.append(now)
        return len(self._times) == INVALID_LIMIT and now - self._times[0] <= INVALID_WINDOW_S
