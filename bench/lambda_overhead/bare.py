"""The bare contender: Mangum + Starlette, one app and handler per function as edgemart has,
no middleware at all.

Home answers the same JSON bytes and cache headers from a dict holding them with their expiry
(the least an in-process cache does); the purchase does `handwritten`'s work with Starlette's
request and JSONResponse and awaits the stub database through its async face.
"""

from __future__ import annotations

import time

from mangum import Mangum
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.lambda_overhead import handwritten
from bench.lambda_overhead.contender import Contender
from bench.lambda_overhead.invocations import HOME_TTL_S, cached_home, rendered_home
from bench.lambda_overhead.stub import PurchaseDatabase


def build() -> Contender:
    body, etag = rendered_home()
    cache = {"home": (time.time() + HOME_TTL_S, body, etag)}
    database = PurchaseDatabase()

    async def home(request: Request) -> Response:
        cached, headers = cached_home(cache)
        return Response(cached, headers=headers, media_type="application/json")

    async def purchase(request: Request) -> Response:
        try:
            sub = handwritten.buyer(request.headers.get("authorization"))
            key = handwritten.idempotency_key(request.headers.get("idempotency-key"))
            sent = handwritten.purchase_body(
                request.headers.get("content-type"), await request.body()
            )
        except handwritten.Refusal as refusal:
            return JSONResponse({"code": refusal.code}, status_code=refusal.status)
        request_id = request.scope["aws.event"]["requestContext"]["requestId"]
        args = handwritten.purchase_args(sub, key, sent, request_id)
        async with database.connection() as conn:
            row = await (await conn.execute(handwritten.PURCHASE_SQL, args)).fetchone()
        order = row["body"]
        return JSONResponse(
            order, status_code=row["status"], headers=handwritten.created_headers(order)
        )

    home_app = Starlette(routes=[Route("/marketplace/home", home)])
    purchase_app = Starlette(routes=[Route("/purchases", purchase, methods=["POST"])])
    return Contender(
        {
            "home": Mangum(home_app, lifespan="off"),
            "purchase": Mangum(purchase_app, lifespan="off"),
        },
        database,
    )
