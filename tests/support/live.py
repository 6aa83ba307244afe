"""Live-update test helpers: real `edgemart serve` processes with queued purchases through a
real local SQS endpoint (moto's server), and a WebSocket client's reads with a deadline."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.conftest import FAKE_AWS_ENVIRONMENT, unused_port
from tests.support.serve import Serve

SQS_DELAY_S = 3
"""Queued orders stay invisible to the worker this long: a test subscribes to one before the
worker can apply it, so the change it then receives is a push, not the state on subscribe."""


@contextmanager
def sqs_server() -> Iterator[str]:
    """moto's SQS over HTTP on a loopback port (the gateway's poller talks to it as to AWS)."""
    from moto.server import ThreadedMotoServer

    port = unused_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def create_queue(endpoint: str) -> str:
    import boto3

    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"live-{time.monotonic_ns()}"
    attributes = {"DelaySeconds": str(SQS_DELAY_S)}
    url: str = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def live_environment(
    database_url: str, redis_url: str, sqs_endpoint: str, queue_url: str, secret: str
) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SHARED_CACHE_NAMESPACE": f"edgemart-live-test:{time.monotonic_ns()}",
        "JWT_SECRET": secret,
        "PURCHASE_QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": sqs_endpoint,
        **FAKE_AWS_ENVIRONMENT,
        "SCHEDULE_INTERVALS": "order_worker=0.5",
        "RATE_LIMIT_PURCHASES": "100000/60",
        "RATE_LIMIT_STORE": "100000/60",
        "RATE_LIMIT_LISTINGS": "100000/60",
        "WS_MAX_CONNECTIONS_PER_CLIENT": "8",
        "WS_SEND_QUEUE": "64",
        "ACCESS_LOG_SAMPLE_RATE": "0",
    }


def ws_url(serve: Serve) -> str:
    return serve.url.replace("http://", "ws://") + "/ws"


async def receive(socket: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(timeout_s):
        frame = await socket.recv()
    message: dict[str, Any] = json.loads(frame)
    return message


async def receive_until(
    socket: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    """The first message `wanted` accepts, skipping others, within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = await receive(socket, max(0.01, deadline - time.monotonic()))
        if wanted(message):
            return message


async def send(socket: ClientConnection, **document: Any) -> None:
    await socket.send(json.dumps(document))
