"""One client message handled: the same rules on the gateway and on AWS, each keeping its
session (who authenticated, what it subscribes to) in its own `SessionStore`.

A subscription is recorded before the channel's current state is read, so a change committed
between the two is delivered rather than lost (the client may then see one state twice, never
miss the last one); a channel the client may not see is unsubscribed again and answered
`*_not_found`, the same answer for another buyer's order as for an id that does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from edgemart.auth import Authenticator, UnauthorizedError
from edgemart.live.protocol import (
    INVALID_MESSAGE,
    NOT_FOUND,
    PONG,
    TOO_MANY_SUBSCRIPTIONS,
    UNAUTHORIZED,
    Channel,
    InvalidMessageError,
    error_frame,
    parse_frame,
)
from edgemart.live.state import PostgresState
from edgemart.tenancy import Tenant


class SessionStore(Protocol):
    """Where one connection's session lives: in the gateway process's memory, or in
    PostgreSQL for the AWS WebSocket API (each message may reach another environment)."""

    @property
    def tenant_id(self) -> uuid.UUID: ...

    async def subject(self) -> str | None:
        """The authenticated buyer, if any."""
        ...

    async def authenticated(self, sub: str) -> None: ...

    async def subscribe(self, channel: Channel) -> bool:
        """Record the subscription; False when the connection is at MAX_SUBSCRIPTIONS (a
        channel it already has is not counted twice)."""
        ...

    async def unsubscribe(self, channel: Channel) -> None: ...


@dataclass(slots=True)
class Outcome:
    replies: list[str] = field(default_factory=list)
    invalid: bool = False
    """The frame broke the protocol (the caller counts these, and closes a flood)."""


async def handle_frame(
    frame: str | bytes | None,
    store: SessionStore,
    state: PostgresState,
    authenticator: Authenticator,
    tenant: Tenant | None = None,
) -> Outcome:
    """`tenant`: in multi mode, the socket's, which a token must name (`org_id`) to
    authenticate on it; None in single mode, which ignores `org_id` as every route does."""
    try:
        message = parse_frame(frame)
    except InvalidMessageError as exc:
        return Outcome([error_frame(INVALID_MESSAGE, exc.channel)], invalid=True)
    if message.action == "ping":
        return Outcome([PONG])
    if message.action == "auth":
        assert message.token is not None
        try:
            principal = await authenticator.verify(message.token)
        except UnauthorizedError:
            return Outcome([error_frame(UNAUTHORIZED)])  # the socket stays open
        if tenant is not None and not principal.belongs_to(tenant):
            return Outcome([error_frame(UNAUTHORIZED)])  # another marketplace's buyer
        await store.authenticated(principal.sub)
        return Outcome()
    channel = message.channel
    assert channel is not None
    if message.action == "unsubscribe":
        await store.unsubscribe(channel)
        return Outcome()
    return Outcome([await subscribe(channel, store, state)])


async def subscribe(channel: Channel, store: SessionStore, state: PostgresState) -> str:
    sub = await store.subject()
    if channel.kind == "order" and sub is None:
        return error_frame(UNAUTHORIZED, channel.name)
    if not await store.subscribe(channel):
        return error_frame(TOO_MANY_SUBSCRIPTIONS, channel.name)
    try:
        current = await state.current(store.tenant_id, channel, sub)
    except BaseException:
        await store.unsubscribe(channel)
        raise
    if current is None:
        await store.unsubscribe(channel)
        return error_frame(NOT_FOUND[channel.kind], channel.name)
    return current
