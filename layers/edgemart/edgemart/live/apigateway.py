"""Posting live-update frames to the AWS WebSocket API's connections through boto3's
`apigatewaymanagementapi`: concurrently (a thread pool, boto3 being blocking), a connection
that is gone (410 GoneException) reported so its rows are deleted, throttling retried with
exponential backoff and jitter.

`ApiGatewayPush` is what a committing function's `Services.invalidate` hands its
`Changes.channels` to on AWS: it finds the channels' subscribed connections, reads each
channel's state once, and posts it to each of them before the invocation ends (a frozen
environment would hold the posts).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from edgemart import metrics
from edgemart.db import Database
from edgemart.live.connections import disconnect, subscribers
from edgemart.live.protocol import Channel
from edgemart.live.state import PostgresState, channels_by_tenant
from edgemart.logging import logger

GONE = "GoneException"
THROTTLED = frozenset({"TooManyRequestsException", "LimitExceededException", "ThrottlingException"})


@dataclass
class ManagementApi:
    """The management API of one WebSocket API stage (`endpoint_url`:
    `https://<api>.execute-api.<region>.amazonaws.com/<stage>`)."""

    endpoint_url: str
    max_workers: int = 16
    attempts: int = 5
    base_delay_s: float = 0.05
    sleep: Callable[[float], None] = time.sleep
    _client: Any = field(default=None, init=False, repr=False)

    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("apigatewaymanagementapi", endpoint_url=self.endpoint_url)
        return self._client

    def post(self, connection_id: str, frame: str) -> str:
        """Post one frame: `sent`, `gone`, or `failed` (logged)."""
        from botocore.exceptions import ClientError

        for attempt in range(self.attempts):
            try:
                self.client().post_to_connection(ConnectionId=connection_id, Data=frame.encode())
                return "sent"
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == GONE:
                    return "gone"
                if code not in THROTTLED or attempt == self.attempts - 1:
                    logger.warning("live updates: post to %s failed (%s)", connection_id, code)
                    return "failed"
                self.sleep(self.base_delay_s * 2**attempt * (0.5 + random.random()))
        return "failed"

    def post_all(self, posts: list[tuple[str, str]]) -> list[str]:
        """Post every (connection id, frame) concurrently; the connection ids that are gone."""
        if not posts:
            return []
        workers = min(self.max_workers, len(posts))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(lambda post: self.post(*post), posts))
        for outcome in outcomes:
            metrics.record(metrics.LIVE_POSTS, outcome=outcome)
        return sorted(
            {cid for (cid, _), outcome in zip(posts, outcomes, strict=True) if outcome == "gone"}
        )

    def close(self, connection_id: str) -> None:
        """Close a connection (API Gateway chooses the close code)."""
        from botocore.exceptions import ClientError

        try:
            self.client().delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            logger.warning("live updates: closing %s failed (%r)", connection_id, exc)


class ApiGatewayPush:
    def __init__(self, database: Database, api: ManagementApi) -> None:
        self.database = database
        self.api = api
        self.state = PostgresState(database)

    async def publish(self, keys: Iterable[str]) -> None:
        for tenant_id, channels in channels_by_tenant(keys).items():
            await self._publish(tenant_id, channels)

    async def _publish(self, tenant_id: uuid.UUID, channels: list[Channel]) -> None:
        connections = await subscribers(self.database, tenant_id, [c.name for c in channels])
        if not connections:
            return  # the common case: nobody watches; one indexed read
        watched = [channel for channel in channels if channel.name in connections]
        frames = await self.state.changed(tenant_id, watched)
        posts = [
            (connection_id, frame)
            for name, frame in frames.items()
            for connection_id in connections.get(name, ())
        ]
        gone = await asyncio.to_thread(self.api.post_all, posts)
        await disconnect(self.database, gone)
