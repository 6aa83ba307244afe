"""Every HTTP route of every function, declared once.

Each `RouteSpec` says which function and handler serve a method and path, what it is for, its
rate-limit group and cache rule, who may call it, its parameters and JSON body (as JSON Schema
fragments) and the responses it can give: success statuses and the problem `code`s each error
status can carry. The functions' Starlette routes, the 405 `Allow` header, the rate-limit route
matching, the cache rules' routes, the template check, `/openapi.json` and the request
validation every handler's inputs pass before it runs are derived from it (edgemart.routing,
edgemart.openapi, edgemart.requestinputs). The schemas use the subset of JSON Schema that
edgemart.requestinputs compiles; `x-multiline: true` marks text that may hold line breaks and
tabs (descriptions, reasons), every other string is single-line.

Pure data: every function imports it at cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from edgemart.tenancy import is_tenant_scoped

Auth = Literal["none", "bearer", "admin", "platform"]
"""`platform`: the role `platform_admin` on a token that names no tenant (edgemart.auth)."""
Location = Literal["path", "query", "header"]
Schema = Mapping[str, Any]
Problems = Mapping[int, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter. A path parameter its schema refuses is 422, or 404 `not_found` (the
    code named) when no resource can have such a name: a store slug, a kill switch. A header
    parameter is refused with 400 (`header_problem_codes`)."""

    name: str
    location: Location
    schema: Schema
    required: bool = False
    description: str = ""
    not_found: str | None = None


def header_problem_codes(name: str) -> tuple[str, str]:
    """The 400 codes of a header parameter: missing (or empty), and refused by its schema."""
    snake = name.lower().replace("-", "_")
    return f"{snake}_required", f"invalid_{snake}"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One method on one path. `errors` lists the route's own problem codes; the ones that
    follow from its other fields (auth, rate limit, body, parameters, database, and a path
    that belongs to a tenant) are added by `problems`. `unknown_query`: whether a query
    parameter the route does not declare is refused (422, the rule) or ignored (routes that
    never read their query string)."""

    method: str
    path: str
    function: str
    handler: str
    summary: str
    _: KW_ONLY
    rate_limit: str | None
    cache_rule: str | None
    auth: Auth
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    success: tuple[int, ...] = (200,)
    errors: Problems = field(default_factory=dict)
    database: bool = True
    unknown_query: Literal["refused", "ignored"] = "refused"
    websocket: bool = False
    """A WebSocket upgrade (the live-update socket): served as a Starlette WebSocket route,
    its handler taking the socket; on AWS the WebSocket API serves it, not the HTTP API."""

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def problems(self) -> dict[int, tuple[str, ...]]:
        """Every problem status this route can answer with, and the codes each carries."""
        codes: dict[int, list[str]] = {}

        def add(status: int, *names: str) -> None:
            listed = codes.setdefault(status, [])
            listed.extend(name for name in names if name not in listed)

        if self.auth != "none":
            add(401, "unauthorized")
        if self.auth in ("admin", "platform"):
            add(403, "forbidden")
        for param in self.params:
            if param.location == "header":
                required, invalid = header_problem_codes(param.name)
                add(400, *((required, invalid) if param.required else (invalid,)))
            if param.location == "path" and param.schema.get("format") == "uuid":
                add(404, "not_found")  # the same id in another spelling
            if param.not_found is not None:
                add(404, param.not_found)
        if IDEMPOTENCY_KEY in self.params:
            add(409, "idempotency_key_in_use")
            add(422, "idempotency_key_reused")
        if self.body is not None:
            add(400, "invalid_json")
            add(413, "payload_too_large")
            add(415, "unsupported_media_type")
        if (
            self.body is not None
            or self.unknown_query == "refused"
            or any(p.location != "header" for p in self.params)
        ):
            add(422, "validation_error")
        for status, names in self.errors.items():
            add(status, *names)
        if is_tenant_scoped(self.path):  # in multi mode (decision 0041)
            add(404, "tenant_not_found")
            if self.auth != "none":
                add(403, "tenant_mismatch")
        if self.rate_limit is not None:
            add(429, "rate_limited")
        add(500, "internal_error")
        if self.database:
            add(503, "service_unavailable" if self.method == "GET" else "read_only_mode")
        return {status: tuple(codes[status]) for status in sorted(codes)}


def _text(max_length: int, min_length: int = 0, **more: Any) -> Schema:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, **more}
    if min_length:
        schema["minLength"] = min_length
    return schema


def _multiline(max_length: int) -> Schema:
    return _text(max_length, **{"x-multiline": True})


def _integer(low: int, high: int) -> Schema:
    return {"type": "integer", "minimum": low, "maximum": high}


def _object(required: tuple[str, ...], **properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }


UUID: Schema = {"type": "string", "format": "uuid"}
SLUG: Schema = _text(60, 3, pattern="^[a-z0-9-]{3,60}$", examples=["handmade-pots"])
CURSOR = Param("cursor", "query", _text(1000, 1), description="next_cursor of the previous page")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    _text(
        255,
        1,
        pattern="^[\\x20-\\x7e]{1,255}$",
        description="1 to 255 printable ASCII characters",
        examples=["order-2f1c9a"],
    ),
    required=True,
    description="One key per intended operation; a retry with the same key replays its result",
)
MAX_PRICE = 1_000_000_000
KILL_SWITCHES = ("purchases", "listings")
SORTS = ("relevance", "price_asc", "price_desc", "newest", "popular")


def _limit(default: int, high: int) -> Param:
    return Param("limit", "query", {**_integer(1, high), "default": default})


def _path(name: str, schema: Schema, not_found: str | None = None) -> Param:
    return Param(name, "path", schema, required=True, not_found=not_found)


SWITCH_NAME = _path(
    "name", {"type": "string", "enum": list(KILL_SWITCHES)}, "kill_switch_not_found"
)
STORE_SLUG = _path("slug", SLUG, "store_not_found")


def _admin(method: str, path: str, handler: str, summary: str, **more: Any) -> RouteSpec:
    """An admin route: admins only, the admin rate limit, never cached, its query ignored."""
    return RouteSpec(
        method,
        path,
        "admin",
        handler,
        summary,
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
        unknown_query="ignored",
        **more,
    )


TENANT_SLUG = _path(
    "slug",
    _text(40, 3, pattern="^[a-z0-9-]{3,40}$", examples=["acme-market"]),
    "tenant_not_found",
)
HOST_NAME: Schema = _text(
    253,
    1,
    # Dot-separated labels of letters, digits and inner hyphens: no port, no wildcard, no
    # trailing dot. Either case is taken; a domain is stored lower-case.
    pattern="^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    examples=["shop.example.com"],
)
DOMAINS: Schema = {
    "type": "array",
    "items": HOST_NAME,
    "minItems": 1,
    "maxItems": 20,
    "description": "the host names the marketplace answers on; each names one tenant at most",
}


def _platform(method: str, path: str, handler: str, summary: str, **more: Any) -> RouteSpec:
    """A platform route: tenants themselves, for platform admins on any host; the admin rate
    limit, never cached, its query ignored."""
    return RouteSpec(
        method,
        path,
        "platform",
        handler,
        summary,
        rate_limit="admin",
        cache_rule=None,
        auth="platform",
        unknown_query="ignored",
        **more,
    )


def _health(path: str, handler: str, summary: str, **more: Any) -> RouteSpec:
    """A health-function GET: open to all, never limited or cached, answering without the
    database, its query ignored."""
    return RouteSpec(
        "GET",
        path,
        "health",
        handler,
        summary,
        rate_limit=None,
        cache_rule=None,
        auth="none",
        database=False,
        unknown_query="ignored",
        **more,
    )


ROUTES: tuple[RouteSpec, ...] = (
    # admin
    _admin(
        "GET",
        "/admin/kill-switches",
        "list_switches",
        "List the kill switches",
    ),
    _admin(
        "GET",
        "/admin/kill-switches/{name}",
        "get_switch",
        "One kill switch",
        params=(SWITCH_NAME,),
        errors={404: ("kill_switch_not_found",)},
    ),
    _admin(
        "PUT",
        "/admin/kill-switches/{name}",
        "put_switch",
        "Turn a kill switch on or off (audited; a cooldown follows each change)",
        params=(SWITCH_NAME,),
        body=_object(("enabled",), enabled={"type": "boolean"}, reason=_multiline(500)),
        errors={404: ("kill_switch_not_found",), 409: ("cooldown_active",)},
    ),
    _admin(
        "POST",
        "/admin/wallets/{sub}/credits",
        "credit_wallet",
        "Credit a user's wallet (audited, idempotent)",
        params=(
            _path("sub", _text(255, 1, pattern="^[^\\s]{1,255}$", examples=["auth0|5f7c8e"])),
            IDEMPOTENCY_KEY,
        ),
        body=_object(
            ("amount_cents",), amount_cents=_integer(1, MAX_PRICE), reason=_multiline(500)
        ),
    ),
    _admin(
        "PUT",
        "/admin/products/{product_id}/purchase-mode",
        "set_purchase_mode",
        "Set a product's purchase mode, direct or queued (audited)",
        params=(_path("product_id", UUID),),
        body=_object(("mode",), mode={"type": "string", "enum": ["direct", "queued"]}),
        errors={404: ("product_not_found",), 409: ("queued_mode_unavailable",)},
    ),
    _admin(
        "PUT",
        "/admin/popular-searches/hidden",
        "set_popular_search_hidden",
        "Hide a term from the popular searches, or show it again (audited)",
        body=_object(
            ("query", "hidden"),
            query=_text(200, 1),
            hidden={"type": "boolean"},
            reason=_multiline(500),
        ),
    ),
    # health
    _health(
        "/health",
        "health",
        "Health of the function and its dependencies (503 with the same document when degraded)",
        success=(200, 503),
    ),
    _health(
        "/health/live",
        "live",
        "Liveness of the process alone",
    ),
    _health(
        "/openapi.json",
        "openapi_document",
        "This API's OpenAPI 3.1 document",
    ),
    # home
    RouteSpec(
        "GET",
        "/marketplace/home",
        "home",
        "home",
        "The front page: categories and hot products",
        rate_limit="home",
        cache_rule="home",
        auth="none",
        success=(200, 304),
        unknown_query="ignored",
    ),
    # platform
    _platform(
        "POST",
        "/platform/tenants",
        "create_tenant",
        "Create a tenant (a marketplace) with its domains (audited)",
        body=_object(
            ("slug", "name", "domains"),
            slug=_text(40, 3, pattern="^(?!default$)[a-z0-9-]{3,40}$", examples=["acme-market"]),
            name=_text(100, 1),
            domains=DOMAINS,
            platform_fee_bps=_integer(0, 5000),
        ),
        success=(201,),
        errors={409: ("tenant_conflict",)},
    ),
    _platform(
        "GET",
        "/platform/tenants/{slug}",
        "get_tenant",
        "One tenant and its domains",
        params=(TENANT_SLUG,),
        errors={404: ("tenant_not_found",)},
    ),
    _platform(
        "PUT",
        "/platform/tenants/{slug}/domains",
        "put_tenant_domains",
        "Replace a tenant's domains (audited)",
        params=(TENANT_SLUG,),
        body=_object(("domains",), domains=DOMAINS),
        errors={404: ("tenant_not_found",), 409: ("tenant_conflict",)},
    ),
    # purchase
    RouteSpec(
        "POST",
        "/purchases",
        "purchase",
        "create_purchase",
        "Buy a product from the wallet (idempotent; 202 when the order is queued)",
        rate_limit="purchases",
        cache_rule=None,
        auth="bearer",
        params=(IDEMPOTENCY_KEY,),
        body=_object(
            ("product_id", "quantity"),
            product_id=UUID,
            quantity=_integer(1, 10),
            expected_unit_price_cents=_integer(1, MAX_PRICE),
        ),
        success=(201, 202),
        errors={
            402: ("insufficient_funds",),
            404: ("product_not_found",),
            409: ("out_of_stock", "price_changed", "cannot_buy_own_product"),
            503: ("purchases_disabled", "service_unavailable"),
        },
        unknown_query="ignored",
    ),
    RouteSpec(
        "GET",
        "/purchases",
        "purchase",
        "list_purchases",
        "The caller's orders, newest first",
        rate_limit="purchases",
        cache_rule=None,
        auth="bearer",
        params=(_limit(20, 50), CURSOR),
    ),
    RouteSpec(
        "GET",
        "/purchases/{order_id}",
        "purchase",
        "get_purchase",
        "One of the caller's orders",
        rate_limit="purchases",
        cache_rule=None,
        auth="bearer",
        params=(_path("order_id", UUID),),
        errors={404: ("order_not_found",)},
        unknown_query="ignored",
    ),
    RouteSpec(
        "GET",
        "/wallet",
        "purchase",
        "wallet",
        "The caller's wallet balance",
        rate_limit="purchases",
        cache_rule=None,
        auth="bearer",
        unknown_query="ignored",
    ),
    # realtime
    RouteSpec(
        "GET",
        "/ws",
        "realtime",
        "websocket",
        "Live updates: order status and product stock over a WebSocket (upgrade)",
        rate_limit=None,
        cache_rule=None,
        auth="none",
        success=(101,),
        errors={426: ("upgrade_required",), 429: ("too_many_connections",)},
        database=False,
        unknown_query="ignored",
        websocket=True,
    ),
    # search
    RouteSpec(
        "GET",
        "/marketplace/search",
        "search",
        "search",
        "Search the listed products (a bearer token, when sent, must be valid)",
        rate_limit="search",
        cache_rule="search",
        auth="none",
        params=(
            Param("q", "query", _text(200, 1), description="required unless category is given"),
            Param("category", "query", _text(60, 1)),
            Param("min_price", "query", _integer(0, MAX_PRICE)),
            Param("max_price", "query", _integer(0, MAX_PRICE), description="at least min_price"),
            Param("sort", "query", {"type": "string", "enum": list(SORTS), "default": "relevance"}),
            _limit(20, 50),
            CURSOR,
        ),
        success=(200, 304),
        errors={401: ("unauthorized",), 403: ("tenant_mismatch",), 503: ("search_timeout",)},
    ),
    RouteSpec(
        "GET",
        "/marketplace/search/popular",
        "search",
        "popular",
        "The most searched terms",
        rate_limit="search",
        cache_rule="popular_searches",
        auth="none",
        success=(200, 304),
    ),
    # store
    RouteSpec(
        "POST",
        "/stores",
        "store",
        "create_store",
        "Open a store owned by the caller",
        rate_limit="listings",
        cache_rule=None,
        auth="bearer",
        body=_object(("slug", "name"), slug=SLUG, name=_text(100, 1), description=_multiline(2000)),
        success=(201,),
        errors={409: ("store_slug_taken",)},
        unknown_query="ignored",
    ),
    RouteSpec(
        "GET",
        "/stores/{slug}",
        "store",
        "store_page",
        "A store and a page of its products",
        rate_limit="store",
        cache_rule="store_page",
        auth="none",
        params=(
            STORE_SLUG,
            _limit(24, 50),
            CURSOR,
            Param("category", "query", _text(60, 1)),
        ),
        success=(200, 304),
        errors={404: ("store_not_found",)},
    ),
    RouteSpec(
        "GET",
        "/stores/{slug}/payouts",
        "store",
        "store_payouts",
        "The payouts of a store the caller owns",
        rate_limit="store",
        cache_rule=None,
        auth="bearer",
        params=(STORE_SLUG, _limit(50, 100), CURSOR),
        errors={404: ("store_not_found",)},
    ),
    RouteSpec(
        "POST",
        "/products",
        "store",
        "create_product",
        "List a product in a store the caller owns",
        rate_limit="listings",
        cache_rule=None,
        auth="bearer",
        body=_object(
            ("store_slug", "category_id", "name", "price_cents", "stock"),
            store_slug=SLUG,
            category_id=_integer(1, 2**31 - 1),
            name=_text(200, 1),
            description=_multiline(5000),
            price_cents=_integer(1, MAX_PRICE),
            currency=_text(3, 3),
            stock=_integer(0, 1_000_000),
        ),
        success=(201,),
        errors={403: ("forbidden",), 503: ("listings_disabled",)},
        unknown_query="ignored",
    ),
    RouteSpec(
        "GET",
        "/products/{product_id}",
        "store",
        "product_page",
        "One listed product",
        rate_limit="store",
        cache_rule="product_page",
        auth="none",
        params=(_path("product_id", UUID),),
        success=(200, 304),
        errors={404: ("product_not_found",)},
    ),
    RouteSpec(
        "PATCH",
        "/products/{product_id}",
        "store",
        "update_product",
        "Change a product of a store the caller owns",
        rate_limit="listings",
        cache_rule=None,
        auth="bearer",
        params=(_path("product_id", UUID),),
        body={
            **_object(
                (),
                price_cents=_integer(1, MAX_PRICE),
                stock=_integer(0, 1_000_000),
                is_available={"type": "boolean"},
                name=_text(200, 1),
                description=_multiline(5000),
            ),
            "minProperties": 1,
        },
        errors={
            403: ("forbidden",),
            404: ("product_not_found",),
            503: ("listings_disabled",),
        },
        unknown_query="ignored",
    ),
)


def function_names() -> tuple[str, ...]:
    """The HTTP functions, in table order."""
    return tuple(dict.fromkeys(route.function for route in ROUTES))
