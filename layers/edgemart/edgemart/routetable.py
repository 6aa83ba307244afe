"""Every HTTP route of every function, declared once.

Each `RouteSpec` says which function and handler serve a method and path, what it is for, its
rate-limit group and cache rule, who may call it, its parameters and JSON body (as JSON Schema
fragments) and the responses it can give: success statuses and the problem `code`s each error
status can carry. The functions' Starlette routes, the 405 `Allow` header, the rate-limit route
matching, the cache rules' routes, the template check and `/openapi.json` are derived from it
(edgemart.routing, edgemart.openapi).

Pure data: every function imports it at cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

Auth = Literal["none", "bearer", "admin"]
Location = Literal["path", "query", "header"]
Schema = Mapping[str, Any]
Problems = Mapping[int, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: Location
    schema: Schema
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One method on one path. `errors` lists the route's own problem codes; the ones that
    follow from its other fields (auth, rate limit, body, parameters, database) are added by
    `problems`."""

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
        if self.auth == "admin":
            add(403, "forbidden")
        if any(
            param.location == "header" and param.name == IDEMPOTENCY_KEY.name
            for param in self.params
        ):
            add(400, "idempotency_key_required", "invalid_idempotency_key")
            add(409, "idempotency_key_in_use")
            add(422, "idempotency_key_reused")
        if self.body is not None:
            add(400, "invalid_json")
            add(413, "payload_too_large")
            add(415, "unsupported_media_type")
        if self.body is not None or any(p.location != "header" for p in self.params):
            add(422, "validation_error")
        for status, names in self.errors.items():
            add(status, *names)
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
SLUG: Schema = _text(60, 3, pattern="^[a-z0-9-]{3,60}$")
CURSOR = Param("cursor", "query", _text(1000), description="next_cursor of the previous page")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    _text(255, 1, pattern="^[\\x20-\\x7e]{1,255}$"),
    required=True,
    description="One key per intended operation; a retry with the same key replays its result",
)
MAX_PRICE = 1_000_000_000


def _limit(default: int, high: int) -> Param:
    return Param("limit", "query", {**_integer(1, high), "default": default})


def _path(name: str, schema: Schema) -> Param:
    return Param(name, "path", schema, required=True)


ROUTES: tuple[RouteSpec, ...] = (
    # admin
    RouteSpec(
        "GET",
        "/admin/kill-switches",
        "admin",
        "list_switches",
        "List the kill switches",
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
    ),
    RouteSpec(
        "GET",
        "/admin/kill-switches/{name}",
        "admin",
        "get_switch",
        "One kill switch",
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
        params=(_path("name", _text(255)),),
        errors={404: ("kill_switch_not_found",)},
    ),
    RouteSpec(
        "PUT",
        "/admin/kill-switches/{name}",
        "admin",
        "put_switch",
        "Turn a kill switch on or off (audited; a cooldown follows each change)",
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
        params=(_path("name", _text(255)),),
        body=_object(("enabled",), enabled={"type": "boolean"}, reason=_text(500)),
        errors={404: ("kill_switch_not_found",), 409: ("cooldown_active",)},
    ),
    RouteSpec(
        "POST",
        "/admin/wallets/{sub}/credits",
        "admin",
        "credit_wallet",
        "Credit a user's wallet (audited, idempotent)",
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
        params=(_path("sub", _text(255, 1)), IDEMPOTENCY_KEY),
        body=_object(("amount_cents",), amount_cents=_integer(1, MAX_PRICE), reason=_text(500)),
    ),
    RouteSpec(
        "PUT",
        "/admin/products/{product_id}/purchase-mode",
        "admin",
        "set_purchase_mode",
        "Set a product's purchase mode, direct or queued (audited)",
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
        params=(_path("product_id", UUID),),
        body=_object(("mode",), mode={"type": "string", "enum": ["direct", "queued"]}),
        errors={404: ("not_found", "product_not_found"), 409: ("queued_mode_unavailable",)},
    ),
    RouteSpec(
        "PUT",
        "/admin/popular-searches/hidden",
        "admin",
        "set_popular_search_hidden",
        "Hide a term from the popular searches, or show it again (audited)",
        rate_limit="admin",
        cache_rule=None,
        auth="admin",
        body=_object(
            ("query", "hidden"),
            query=_text(200, 1),
            hidden={"type": "boolean"},
            reason=_text(500),
        ),
    ),
    # health
    RouteSpec(
        "GET",
        "/health",
        "health",
        "health",
        "Health of the function and its dependencies (503 with the same document when degraded)",
        rate_limit=None,
        cache_rule=None,
        auth="none",
        success=(200, 503),
        database=False,
    ),
    RouteSpec(
        "GET",
        "/health/live",
        "health",
        "live",
        "Liveness of the process alone",
        rate_limit=None,
        cache_rule=None,
        auth="none",
        database=False,
    ),
    RouteSpec(
        "GET",
        "/openapi.json",
        "health",
        "openapi_document",
        "This API's OpenAPI 3.1 document",
        rate_limit=None,
        cache_rule=None,
        auth="none",
        database=False,
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
        errors={404: ("not_found", "order_not_found")},
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
            Param("q", "query", _text(200), description="required unless category is given"),
            Param("category", "query", _text(60)),
            Param("min_price", "query", _integer(0, MAX_PRICE)),
            Param("max_price", "query", _integer(0, MAX_PRICE)),
            Param(
                "sort",
                "query",
                {
                    "type": "string",
                    "enum": ["relevance", "price_asc", "price_desc", "newest", "popular"],
                    "default": "relevance",
                },
            ),
            _limit(20, 50),
            CURSOR,
        ),
        success=(200, 304),
        errors={401: ("unauthorized",), 503: ("search_timeout",)},
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
        errors={422: ("validation_error",)},
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
        body=_object(("slug", "name"), slug=SLUG, name=_text(100, 1), description=_text(2000)),
        success=(201,),
        errors={409: ("store_slug_taken",)},
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
            _path("slug", SLUG),
            _limit(24, 50),
            CURSOR,
            Param("category", "query", _text(60)),
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
        params=(_path("slug", SLUG), _limit(50, 100), CURSOR),
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
            description=_text(5000),
            price_cents=_integer(1, MAX_PRICE),
            currency=_text(3, 3),
            stock=_integer(0, 1_000_000),
        ),
        success=(201,),
        errors={403: ("forbidden",), 503: ("listings_disabled",)},
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
        errors={404: ("not_found", "product_not_found")},
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
                description=_text(5000),
            ),
            "minProperties": 1,
        },
        errors={
            403: ("forbidden",),
            404: ("not_found", "product_not_found"),
            503: ("listings_disabled",),
        },
    ),
)


def function_names() -> tuple[str, ...]:
    """The HTTP functions, in table order."""
    return tuple(dict.fromkeys(route.function for route in ROUTES))
