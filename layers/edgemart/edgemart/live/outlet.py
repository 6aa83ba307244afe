"""Where a committed write's live channels go (`Services.live`): one Protocol, one class per
way edgemart runs (edgemart.live.hub.LiveHub on the gateway,
edgemart.live.apigateway.ApiGatewayPush on AWS)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class LiveOutlet(Protocol):
    async def publish(self, keys: Iterable[str]) -> None:
        """Deliver the changed channels (`Changes.channels`) to their subscribers; called
        after the commit, never before."""
        ...
