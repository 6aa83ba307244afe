"""The edgemart contender: the home and purchase functions' own `handler`s, imported as Lambda
imports them, their apps built from the environment (`ENVIRONMENT`) as in a deployment.

On: the request id, the access log (sampled at its default 1%, every line formatted and
written), the memory rate limiter (limits raised so that no request is refused: every request
is still checked and counted), the request metrics and their EMF lines at the end of each
invocation. Off: tracing (`TRACING=off`), Redis and the shared cache (no `REDIS_URL`).

Home is served from the warm in-process cache (L1): the document is put there once, as a fill
would leave it, to be kept for the run. The purchase reaches the stub database at the
narrowest seam: the primary `Database`'s pool, so `Database.connection` (its circuit breaker),
the retry policy and everything above them run as in production.
"""

from __future__ import annotations

import os
import time
from typing import Final

from bench.lambda_overhead.contender import Contender
from bench.lambda_overhead.invocations import HOME_TTL_S, JWT_SECRET
from bench.lambda_overhead.stub import PurchaseDatabase

UNLIMITED: Final = "1000000000/60"
ENVIRONMENT: Final = {
    "RATE_LIMIT_BACKEND": "memory",
    "RATE_LIMIT_HOME": UNLIMITED,
    "RATE_LIMIT_PURCHASES": UNLIMITED,
    "JWT_SECRET": JWT_SECRET,
    "TRACING": "off",
    "LOG_LEVEL": "INFO",
    "POWERTOOLS_SERVICE_NAME": "edgemart",
}
"""Set before the functions are imported. The worker's environment has no DATABASE_URL,
REDIS_URL or Upstash settings (`run.worker_environment`)."""


def build() -> Contender:
    os.environ.update(ENVIRONMENT)
    import functions.home.app as home
    import functions.purchase.app as purchase
    from bench.ratelimit.gateway import home_document
    from edgemart.cache import Rendered
    from edgemart.tenancy import DEFAULT_TENANT
    from edgemart.tenantscope import scoped

    rendered = Rendered.of(home_document(), now=time.time())
    home.app.state.services.cache.put(scoped(DEFAULT_TENANT, "home"), rendered, HOME_TTL_S)
    database = PurchaseDatabase()

    async def stub_pool() -> PurchaseDatabase:
        return database

    purchase.app.state.services.primary.pool = stub_pool
    return Contender({"home": home.handler, "purchase": purchase.handler}, database)
