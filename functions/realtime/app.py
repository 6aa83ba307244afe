"""realtime: live updates over WebSocket (docs/live-updates.md), both ways edgemart runs.

- **Gateway** (`routes`): `GET /ws`, one socket per client held by the process that accepted
  it (edgemart.live.hub). Its session is in memory; replies and changes go through the
  socket's bounded queue.
- **AWS** (`handler`): the API Gateway WebSocket API's `$connect`, `$disconnect` and
  `$default` routes. The session lives in PostgreSQL (edgemart.live.connections); replies are
  posted back through the Management API, as the committing functions post changes
  (edgemart.live.apigateway).

Both handle a message with the same `handle_frame`, so a client sees the same protocol.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket

from edgemart.clientip import client_ip
from edgemart.errors import TenantNotFoundError, problem_body, problem_response
from edgemart.jobs import JobRunner
from edgemart.live.apigateway import ManagementApi
from edgemart.live.connections import PostgresSession, connect, disconnect
from edgemart.live.hub import LiveHub, LiveSocket
from edgemart.live.protocol import CLOSE_NORMAL, CLOSE_POLICY
from edgemart.live.session import handle_frame
from edgemart.live.state import PostgresState
from edgemart.routing import starlette_routes
from edgemart.services import Services
from edgemart.tenancy import DEFAULT_TENANT, Tenant, tenant_of
from edgemart.tenantresolution import host_key

CLOSE_WAIT_S = 10.0
"""How long a slow client's close frame may wait behind its unread frames."""
TOO_MANY_CONNECTIONS = (
    "too_many_connections",
    "Too many connections",
    "This client holds the most WebSockets allowed; close one first",
)


def live_hub(services: Services) -> LiveHub:
    """The gateway process's hub, wired to its services (`Services.attach_live`)."""
    settings = services.settings
    hub = LiveHub(
        PostgresState(services.primary),
        max_per_client=settings.ws_max_connections_per_client,
        queue_bound=settings.ws_send_queue,
    )
    services.attach_live(hub)
    return hub


# ---- Gateway ----


async def websocket(socket: WebSocket) -> None:
    services: Services = socket.app.state.services
    hub = services.live
    if not isinstance(hub, LiveHub):  # an app built without the gateway's hub
        await socket.close(1011)
        return
    settings = services.settings
    client = client_ip(socket.scope, settings.trusted_proxies) or ""
    if not hub.admit(client):
        status, code, title, detail = 429, *TOO_MANY_CONNECTIONS
        await socket.send_denial_response(problem_response(status, code, title, detail))
        return
    try:
        await socket.accept()
        tenant = tenant_of(socket.scope)
        live = hub.connect(tenant.id, socket.send_text, _closer(socket))
        try:
            await _receive(socket, live, hub, services, token_tenant(services, tenant))
            await live.finished(CLOSE_WAIT_S)
        finally:
            hub.disconnect(live)
    finally:
        hub.release(client)


def _closer(socket: WebSocket) -> Any:
    async def close(code: int) -> None:
        await socket.close(code)

    return close


def token_tenant(services: Services, tenant: Tenant) -> Tenant | None:
    """The tenant a token must name to authenticate on a socket: its own in multi mode;
    None in single mode, which ignores `org_id`."""
    return tenant if services.settings.tenancy == "multi" else None


async def _receive(
    socket: WebSocket,
    live: LiveSocket,
    hub: LiveHub,
    services: Services,
    tenant: Tenant | None,
) -> None:
    idle_s = services.settings.ws_idle_timeout_s
    while not live.closed:
        try:
            async with asyncio.timeout(idle_s):
                message = await socket.receive()
        except TimeoutError:
            await live.close(CLOSE_NORMAL)
            return
        if message["type"] == "websocket.disconnect":
            return
        frame = message.get("text")
        if frame is None:
            frame = message.get("bytes")
        outcome = await handle_frame(frame, live, hub.state, services.authenticator, tenant)
        for reply in outcome.replies:
            live.push(reply)
        if outcome.invalid and live.invalid.note(time.monotonic()):
            await live.close(CLOSE_POLICY)
            return


routes = starlette_routes("realtime", {"websocket": websocket})  # type: ignore[dict-item]


# ---- AWS: the WebSocket API ----


def management_api(services: Services, context: Mapping[str, Any]) -> ManagementApi:
    """The stage's Management API: WS_API_ENDPOINT, else the one the event names."""
    endpoint = services.settings.ws_api_endpoint
    if not endpoint:
        endpoint = f"https://{context['domainName']}/{context['stage']}"
    return ManagementApi(endpoint)


async def realtime(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    context = event["requestContext"]
    route = context["routeKey"]
    connection_id = str(context["connectionId"])
    if route == "$connect":
        client = str(context.get("identity", {}).get("sourceIp", ""))
        limit = services.settings.ws_max_connections_per_client
        tenant = await connecting_tenant(services, event)
        if tenant is None:
            unknown = TenantNotFoundError()
            return refusal(unknown.status, unknown.code, unknown.title, str(unknown))
        if not await connect(services.primary, connection_id, client, limit, tenant.id):
            return refusal(429, *TOO_MANY_CONNECTIONS)
        return {"statusCode": 200}
    if route == "$disconnect":
        await disconnect(services.primary, [connection_id])
        return {"statusCode": 200}
    session = await PostgresSession.load(services.primary, connection_id)
    api = management_api(services, context)
    if session is None:  # $connect never recorded it (or it was deleted): nothing to serve
        await asyncio.to_thread(api.close, connection_id)
        return {"statusCode": 410}
    frame: str | bytes | None = event.get("body")
    if event.get("isBase64Encoded") and isinstance(frame, str):
        frame = frame.encode()  # a binary frame: refused as any non-text frame
    outcome = await handle_frame(
        frame,
        session,
        PostgresState(services.primary),
        services.authenticator,
        token_tenant(services, session.tenant),
    )
    posts = [(connection_id, reply) for reply in outcome.replies]
    gone = await asyncio.to_thread(api.post_all, posts)
    if gone:
        await disconnect(services.primary, gone)
    elif outcome.invalid and await session.note_invalid():
        await asyncio.to_thread(api.close, connection_id)
        await disconnect(services.primary, [connection_id])
    return {"statusCode": 200}


def refusal(status: int, code: str, title: str, detail: str) -> dict[str, Any]:
    """An upgrade refused at `$connect`: API Gateway answers the client with it."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/problem+json"},
        "body": json.dumps(problem_body(status, code, title, detail), separators=(",", ":")),
    }


async def connecting_tenant(services: Services, event: Mapping[str, Any]) -> Tenant | None:
    """The tenant a `$connect` is for: the default in single mode; in multi mode its host's
    (the `Host` the client connected with; a custom domain per marketplace), None when no
    tenant owns it."""
    directory = services.tenant_directory
    if directory is None:
        return DEFAULT_TENANT
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    host = host_key(headers.get("host", ""))
    return None if host is None else await directory.tenant_of(host)


runner = JobRunner(realtime)
handler = runner.handler
