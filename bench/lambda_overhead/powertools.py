"""The Powertools contender: an `APIGatewayHttpResolver` route per function, its handler
wrapped by `Logger.inject_lambda_context` (the Lambda context on every log line: Powertools'
counterpart of edgemart's request id and log keys). With `correlation_id=True`, the logger
also takes API Gateway's request id as its correlation id (`correlation_paths.API_GATEWAY_HTTP`,
a JMESPath search per invocation).

Home answers the same JSON text and cache headers from a dict holding them with their expiry;
the purchase does `handwritten`'s work with the resolver's event and calls the stub database
through its sync face (a Powertools handler is synchronous).
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler import Response as PowertoolsResponse
from aws_lambda_powertools.logging import correlation_paths

from bench.lambda_overhead import handwritten
from bench.lambda_overhead.contender import Contender, Handler
from bench.lambda_overhead.invocations import HOME_TTL_S, cached_home, rendered_home
from bench.lambda_overhead.stub import PurchaseDatabase

JSON = "application/json"


def build(*, correlation_id: bool = False) -> Contender:
    body, etag = rendered_home()
    cache = {"home": (time.time() + HOME_TTL_S, body.decode(), etag)}
    database = PurchaseDatabase()
    logger = Logger(service="bench-powertools", utc=True, use_rfc3339=True)
    home_resolver = APIGatewayHttpResolver()
    purchase_resolver = APIGatewayHttpResolver()

    @home_resolver.get("/marketplace/home")
    def home() -> PowertoolsResponse[str]:
        cached, headers = cached_home(cache)
        return PowertoolsResponse(200, JSON, cached, headers=headers)

    @purchase_resolver.post("/purchases")
    def purchase() -> PowertoolsResponse[str]:
        event = purchase_resolver.current_event
        headers = event.headers
        try:
            sub = handwritten.buyer(headers.get("authorization"))
            key = handwritten.idempotency_key(headers.get("idempotency-key"))
            sent = handwritten.purchase_body(headers.get("content-type"), event.decoded_body or "")
        except handwritten.Refusal as refusal:
            return PowertoolsResponse(refusal.status, JSON, f'{{"code":"{refusal.code}"}}')
        args = handwritten.purchase_args(sub, key, sent, event.request_context.request_id)
        row = database.sync_connection().execute(handwritten.PURCHASE_SQL, args).fetchone()
        order = row["body"]
        return PowertoolsResponse(
            row["status"], JSON, handwritten.order_json(order), handwritten.created_headers(order)
        )

    def entry(resolver: APIGatewayHttpResolver) -> Handler:
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return resolver.resolve(event, context)

        if correlation_id:
            path = correlation_paths.API_GATEWAY_HTTP
            return logger.inject_lambda_context(correlation_id_path=path)(handler)
        return logger.inject_lambda_context(handler)

    return Contender({"home": entry(home_resolver), "purchase": entry(purchase_resolver)}, database)
