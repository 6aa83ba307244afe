"""Search function: `GET /marketplace/search` and `GET /marketplace/search/popular`.

Full-text search over the `search_vector` column PostgreSQL keeps current (GIN index,
`websearch_to_tsquery`, ranked by `ts_rank_cd`), with filters, five sort orders and keyset
pagination: each page continues strictly after the previous page's last sort key, so pages
never repeat or skip a product while the catalog is unchanged, and no page costs an OFFSET.

Every statement runs in the request's tenant (`in_tenant`, docs/decisions/0040); searches are
counted, and remembered, for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.errors import QueryCanceled
from starlette.requests import Request
from starlette.responses import Response

from edgemart.appfactory import build_app, lambda_handler
from edgemart.auth import Principal, authenticate
from edgemart.cache import CACHE_RULES, Rendered, normalised_query, serve_cached, tenant_key
from edgemart.changes import SEARCH_KEY_PREFIX, product_tags
from edgemart.clientip import client_ip
from edgemart.counters import client_hash, history_entry, normalise_query, search_count_entry
from edgemart.cursor import cursor_key, decode_cursor, next_page, query_fingerprint
from edgemart.db import Connection
from edgemart.errors import ProblemError
from edgemart.products import product_summary
from edgemart.requestinputs import Values, inputs_of
from edgemart.routetable import SORTS
from edgemart.routing import RouteTableError, by_name, starlette_routes
from edgemart.services import services_of
from edgemart.tenancy import Tenant, in_tenant, tenant_of
from edgemart.validation import ValidationError, field_error, text_problem

RULE = CACHE_RULES["search"]
POPULAR_RULE = CACHE_RULES["popular_searches"]
POPULAR_CACHE_KEY = POPULAR_RULE.name  # admin's hide route forgets it by the same name
POPULAR_LIMIT = 20
WALK_WINDOW = 3000  # listed products a sorted walk looks at before giving up (see below)
# A relevance query matching more than BROAD_MATCHES products is ranked among its matches in
# the QUALITY_WINDOW best-rated listings: ranking every match of a phrase most listings hold
# took 0.5-1 s at 1M products (bench/read_path/RESULTS.md).
BROAD_MATCHES = 5000
QUALITY_WINDOW = 5000
QUALITY_ORDER = "listing_rank_score(p.quality_score) DESC, p.rating DESC NULLS LAST, p.id"


@dataclass(frozen=True, slots=True)
class SortSpec:
    """Sort key columns, all in one direction so that one row comparison continues a page
    (`(k1, k2, id) < (...)`) and an index on the same columns can serve it."""

    keys: tuple[str, ...]
    casts: tuple[str, ...]
    descending: bool


SORT_SPECS: dict[str, SortSpec] = {
    "relevance": SortSpec(
        (
            "round(ts_rank_cd(p.search_vector, query.q)::numeric, 6)",
            "listing_rank_score(p.quality_score)::numeric",
            "p.id",
        ),
        ("numeric", "numeric", "uuid"),
        descending=True,
    ),
    "price_asc": SortSpec(("p.price_cents", "p.id"), ("bigint", "uuid"), descending=False),
    "price_desc": SortSpec(("p.price_cents", "p.id"), ("bigint", "uuid"), descending=True),
    "newest": SortSpec(("p.created_at", "p.id"), ("timestamptz", "uuid"), descending=True),
    "popular": SortSpec(("p.sold_count", "p.id"), ("integer", "uuid"), descending=True),
}
if tuple(SORT_SPECS) != SORTS:  # the route table's `sort` enum, one spec per order
    raise RouteTableError(f"search sorts {tuple(SORT_SPECS)} differ from the table's {SORTS}")


@dataclass(frozen=True, slots=True)
class SearchParams:
    q: str | None
    category: str | None
    min_price: int | None
    max_price: int | None
    sort: str
    limit: int
    cursor: str | None

    @property
    def fingerprint(self) -> str:
        return query_fingerprint(self.q, self.category, self.min_price, self.max_price, self.sort)


def search_params(query: Values) -> SearchParams:
    """The search a query string asks for (each parameter already held to the route table),
    with the rules across parameters the table cannot state."""
    q = query.optional("q", str)
    category = query.optional("category", str)
    min_price = query.optional("min_price", int)
    max_price = query.optional("max_price", int)
    errors = []
    if q is None and category is None:
        errors.append(field_error("q", "query", "is required unless category is given"))
    if min_price is not None and max_price is not None and min_price > max_price:
        errors.append(field_error("min_price", "query", "must not exceed max_price"))
    if errors:
        raise ValidationError(errors)
    sort = query.value("sort", str)
    if sort == "relevance" and q is None:
        sort = "popular"  # nothing to rank by: browse a category by popularity
    limit = query.value("limit", int)
    cursor = query.optional("cursor", str)
    return SearchParams(q, category, min_price, max_price, sort, limit, cursor)


def _filters(
    params: SearchParams, keys: tuple[str, ...], position: list[Any] | None
) -> tuple[list[str], list[Any]]:
    """Listing, category, price and keyset conditions (not the text match) and their args."""
    spec = SORT_SPECS[params.sort]
    conditions = ["p.is_available", "p.is_approved"]
    args: list[Any] = []
    if params.category is not None:
        conditions.append("p.category_id = (SELECT id FROM categories WHERE slug = %s)")
        args.append(params.category)
    if params.min_price is not None:
        conditions.append("p.price_cents >= %s")
        args.append(params.min_price)
    if params.max_price is not None:
        conditions.append("p.price_cents <= %s")
        args.append(params.max_price)
    if position is not None:
        conditions.append(_after(spec, keys))
        args.extend(position)
    return conditions, args


def _after(spec: SortSpec, keys: tuple[str, ...]) -> str:
    """Keyset continuation: `keys` strictly after the previous page's last row (its values
    are the args, cast as the spec says)."""
    placeholders = ", ".join(f"%s::{cast}" for cast in spec.casts)
    operator = "<" if spec.descending else ">"
    return f"({', '.join(keys)}) {operator} ({placeholders})"


def _select(keys: tuple[str, ...]) -> str:
    """The page query's select list: the product and its sort keys, nothing else."""
    key_columns = ", ".join(f"{key} AS o{index}" for index, key in enumerate(keys))
    return f"SELECT p.id AS product_id, {key_columns}"


def _materialise(page_sql: str, key_count: int, descending: bool) -> str:
    """Build each result's JSON only for the page's rows, outside the ranked subquery.

    Inside it, PostgreSQL computes the select list for every match before the sort and the
    LIMIT: for a common term that was the JSON (and its `to_char`) of 31,000 products to keep
    21 (bench/read_path/RESULTS.md)."""
    keys = [f"page.o{index}" for index in range(key_count)]
    key_text = ", ".join(f"{key}::text AS k{index}" for index, key in enumerate(keys))
    return (
        f"SELECT {product_summary()} AS item, {key_text} FROM ({page_sql}) page "
        "JOIN products p ON p.id = page.product_id JOIN stores s ON s.id = p.store_id "
        f"ORDER BY {_order(tuple(keys), descending)}"
    )


def _order(keys: tuple[str, ...], descending: bool) -> str:
    direction = "DESC" if descending else "ASC"
    return ", ".join(f"{key} {direction}" for key in keys)


def build_search_sql(
    params: SearchParams, position: list[Any] | None, *, confined: bool = False
) -> tuple[bytes, list[Any]]:
    """The page query: filters, keyset continuation after `position`, limit + 1 rows.
    `confined`: the role is under row-level security, so the text match cannot use the GIN
    index and the candidates come from `search_terms` (`_matching_source`)."""
    spec = SORT_SPECS[params.sort]
    keys = spec.keys
    if params.q is not None and params.sort != "relevance":
        # Here the text match must drive the plan (GIN index, then sort the matches):
        # ordering by a plain column would tempt the planner into walking that column's index
        # and testing every row against the query (seconds on a million rows for a rare term).
        # `+ 0` hides the index. Common terms take the walk in `build_window_sql` instead.
        keys = tuple(_no_index(key) for key in keys)
    args: list[Any] = []
    text_match: list[str] = []
    store_active = "s.is_active"
    if params.q is not None:
        source = _matching_source(confined)
        args.append(params.q)
        text_match.append("p.search_vector @@ query.q")
    else:
        source = "products p"
    if params.q is not None and confined:
        # A join would do, but the planner, underestimating the candidates that match, scans
        # stores once per match; a lookup by id per match is what it should do.
        store_active = ACTIVE_STORE
    else:
        source += " JOIN stores s ON s.id = p.store_id"
    conditions, filter_args = _filters(params, keys, position)
    args.extend(filter_args)
    where = " AND ".join([*conditions, store_active, *text_match])
    sql = (
        f"{_select(keys)} FROM {source} WHERE {where} "
        f"ORDER BY {_order(keys, spec.descending)} LIMIT %s"
    )
    args.append(params.limit + 1)
    return _materialise(sql, len(keys), spec.descending).encode(), args


ACTIVE_STORE = "(SELECT s.is_active FROM stores s WHERE s.id = p.store_id)"


def _matching_source(confined: bool) -> str:
    """`products p` and `query(q)` (one argument: the text) for a text match.

    Unconfined (the owner, a superuser): the products themselves, so the planner can take the
    GIN index for `p.search_vector @@ query.q`. Confined (the application role, docs/decisions/
    0046): that match is not leakproof, so under row-level security it can only filter rows
    already read, and the GIN path becomes a scan of the tenant's catalog. Instead the
    candidates are the products holding a lexeme of the query's cover (`search_cover`: every
    match holds one), found by text equality on search_terms' key, each product then read by
    its id; the caller's `@@` keeps the matches. Same rows, so the same pages and cursors."""
    if not confined:
        return "websearch_to_tsquery('english', %s) AS query(q), products p"
    return (
        "websearch_to_tsquery('english', %s) AS query(q) "
        "CROSS JOIN LATERAL (SELECT DISTINCT t.product_id FROM search_terms t "
        "WHERE t.tenant_id = current_tenant_id() AND t.lexeme = ANY (search_cover(query.q))) c "
        "JOIN products p ON p.id = c.product_id"
    )


def build_window_sql(
    params: SearchParams, position: list[Any] | None, window: int
) -> tuple[bytes, list[Any]]:
    """For a text query in a column order: walk that column's index through the next
    `window` listed products and keep the matches. For a common term the page fills within a
    few milliseconds; when it does not fill, `build_search_sql` gives the exact answer."""
    spec = SORT_SPECS[params.sort]
    conditions, args = _filters(params, spec.keys, position)
    inner = (
        f"SELECT p.* FROM products p WHERE {' AND '.join(conditions)} "
        f"ORDER BY {_order(spec.keys, spec.descending)} LIMIT %s"
    )
    args.append(window)
    args.append(params.q)
    sql = (
        f"{_select(spec.keys)} FROM ({inner}) p JOIN stores s ON s.id = p.store_id, "
        "websearch_to_tsquery('english', %s) AS query(q) "
        "WHERE p.search_vector @@ query.q AND s.is_active "
        f"ORDER BY {_order(spec.keys, spec.descending)} LIMIT %s"
    )
    args.append(params.limit + 1)
    return _materialise(sql, len(spec.keys), spec.descending).encode(), args


def build_terms_sql(
    params: SearchParams, position: list[Any] | None, window: int
) -> tuple[bytes, list[Any]]:
    """For a one-lexeme query by relevance: walk that lexeme's entries of `search_terms`
    (migration 0013), which hold both relevance keys in index order, through the next `window`
    and keep the listed ones that pass the filters. Same keys, same order as the exact query;
    when the page does not fill, `build_search_sql` gives the exact answer."""
    spec = SORT_SPECS["relevance"]
    keys = ("t.rank", "t.rank_score", "t.product_id")  # the spec's keys, precomputed
    # The tenant named: the term index leads with it, and a role that row-level security does
    # not restrict (the owner) would otherwise have no tenant to walk the index under.
    walk = [
        "t.tenant_id = current_tenant_id()",
        "t.lexeme = single_lexeme(websearch_to_tsquery('english', %s))",
    ]
    args: list[Any] = [params.q]
    if position is not None:
        walk.append(_after(spec, keys))
        args.extend(position)
    order = _order(keys, spec.descending)
    inner = f"SELECT t.* FROM search_terms t WHERE {' AND '.join(walk)} ORDER BY {order} LIMIT %s"
    args.append(window)
    conditions, filter_args = _filters(params, (), None)
    args.extend(filter_args)
    page = (
        f"{_select(keys)} FROM ({inner}) t JOIN products p ON p.id = t.product_id "
        "JOIN stores s ON s.id = p.store_id "
        f"WHERE {' AND '.join([*conditions, 's.is_active'])} ORDER BY {order} LIMIT %s"
    )
    args.append(params.limit + 1)
    return _materialise(page, len(keys), spec.descending).encode(), args


def _no_index(key: str) -> str:
    if key == "p.id":
        return key
    if key == "p.created_at":
        return "(p.created_at + interval '0 s')"
    return f"({key} + 0)"


def build_broad_probe_sql(
    params: SearchParams, *, confined: bool = False
) -> tuple[bytes, list[Any]]:
    """Counts the query's listed matches, stopping past BROAD_MATCHES."""
    conditions, args = _filters(params, (), None)
    sql = (
        f"SELECT count(*) AS matches FROM (SELECT 1 FROM {_matching_source(confined)} WHERE "
        f"{' AND '.join(conditions)} AND p.search_vector @@ query.q LIMIT %s) matched"
    )
    return sql.encode(), [params.q, *args, BROAD_MATCHES + 1]


def build_quality_window_sql(
    params: SearchParams, position: list[Any] | None, window: int
) -> tuple[bytes, list[Any]]:
    """For a broad query by relevance: its matches among the `window` best-rated listings (an
    index walk, the same set on every page), ranked by the usual relevance keys."""
    spec = SORT_SPECS["relevance"]
    inner_conditions, args = _filters(params, (), None)
    inner = (
        f"SELECT p.* FROM products p WHERE {' AND '.join(inner_conditions)} "
        f"ORDER BY {QUALITY_ORDER} LIMIT %s"
    )
    args.append(window)
    args.append(params.q)
    conditions = ["p.search_vector @@ query.q", "s.is_active"]
    if position is not None:
        conditions.append(_after(spec, spec.keys))
        args.extend(position)
    sql = (
        f"{_select(spec.keys)} FROM ({inner}) p JOIN stores s ON s.id = p.store_id, "
        "websearch_to_tsquery('english', %s) AS query(q) "
        f"WHERE {' AND '.join(conditions)} ORDER BY {_order(spec.keys, spec.descending)} LIMIT %s"
    )
    args.append(params.limit + 1)
    return _materialise(sql, len(spec.keys), spec.descending).encode(), args


async def _fetch(conn: Connection, query: tuple[bytes, list[Any]]) -> list[Any]:
    sql, args = query
    return await (await conn.execute(sql, args)).fetchall()


async def search_rows(
    conn: Connection, params: SearchParams, position: list[Any] | None, *, confined: bool
) -> list[Any]:
    """One page (+1 row) of results: an index walk when it can fill the page, else exact; a
    broad multi-word query by relevance is ranked within the best-rated listings. `confined`:
    the role is under row-level security (`_matching_source`)."""
    if params.q is not None and params.sort == "relevance":
        if len(params.q.split()) == 1:
            rows = await _fetch(conn, build_terms_sql(params, position, WALK_WINDOW))
            if len(rows) > params.limit:
                return rows
        else:
            # Never a generic plan: for it the query is unknown, so it builds the index's
            # bitmap of every match (65 ms for a broad query at 1M products) where the plan
            # for the actual words stops after BROAD_MATCHES rows.
            sql, args = build_broad_probe_sql(params, confined=confined)
            probe = await (await conn.execute(sql, args, prepare=False)).fetchone()
            if probe is not None and probe["matches"] > BROAD_MATCHES:
                return await _fetch(
                    conn, build_quality_window_sql(params, position, QUALITY_WINDOW)
                )
    elif params.q is not None:
        # A column order walks that column's index; a common query fills the page at once, and
        # one that does not has few matches, which the exact plan sorts quickly.
        rows = await _fetch(conn, build_window_sql(params, position, WALK_WINDOW))
        if len(rows) > params.limit:
            return rows
    return await _fetch(conn, build_search_sql(params, position, confined=confined))


class SearchTimeoutError(ProblemError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "search_timeout",
            "Search took too long",
            "This search took too long to run; narrow it down (more words, a category or a "
            "price range) or try again shortly",
            headers={"Retry-After": "5"},
        )


# A query whose index part is empty ('T') matches nearly every product: only excluded words
# (`-lamp -chair`), or excluded words beside stop words or in an OR.
UNBOUNDED_QUERY_SQL = b"SELECT querytree(websearch_to_tsquery('english', %s)) = 'T' AS unbounded"
# With the timeout, whether row-level security binds this connection's role on products (the
# application role: yes; the owner: only where forced on a non-superuser, as on RDS).
PAGE_SETUP_SQL = (
    b"SELECT set_config('statement_timeout', %s, true), row_security_active('products') AS confined"
)


async def search_page(
    conn: Connection,
    params: SearchParams,
    position: list[Any] | None,
    *,
    timeout_ms: int,
    tenant: Tenant,
) -> list[Any]:
    """`search_rows` with its work bounded: a query that only excludes words is refused (422),
    and the page's statements run under `timeout_ms` (503 `search_timeout` past it, which says
    nothing about the database's health, so it does not count against the circuit breaker).
    One transaction, in `tenant`."""
    async with in_tenant(conn, tenant):
        setup = await (await conn.execute(PAGE_SETUP_SQL, [f"{timeout_ms}ms"])).fetchone()
        confined = setup is not None and bool(setup["confined"])
        if params.q is not None and "-" in params.q:  # negation is written `-word`
            row = await (await conn.execute(UNBOUNDED_QUERY_SQL, [params.q])).fetchone()
            if row is not None and row["unbounded"]:
                raise ValidationError(
                    [
                        field_error(
                            "q", "query", "must name a word to find, not only words to exclude"
                        )
                    ]
                )
        try:
            return await search_rows(conn, params, position, confined=confined)
        except QueryCanceled:
            raise SearchTimeoutError() from None


async def load_search(request: Request, params: SearchParams) -> dict[str, Any]:
    services = services_of(request)
    key = cursor_key(services.settings.cursor_secret, tenant_of(request.scope))
    key_count = len(SORT_SPECS[params.sort].keys)
    position = (
        decode_cursor(key, params.fingerprint, params.cursor, length=key_count)
        if params.cursor
        else None
    )
    async with services.reads.connection() as conn:
        rows = await search_page(
            conn,
            params,
            position,
            timeout_ms=services.settings.search_statement_timeout_ms,
            tenant=tenant_of(request.scope),
        )
    page, next_cursor = next_page(
        rows,
        params.limit,
        key,
        params.fingerprint,
        lambda last: [last[f"k{index}"] for index in range(key_count)],
    )
    return {"results": [row["item"] for row in page], "next_cursor": next_cursor}


async def search(request: Request) -> Response:
    params = search_params(inputs_of(request).query)
    services = services_of(request)
    # A bad token is refused (401) before anything is served, counted or remembered.
    principal = await authenticate(request) if "authorization" in request.headers else None
    cache_key = SEARCH_KEY_PREFIX + normalised_query(request, RULE)
    response = await serve_cached(
        request,
        services.cache,
        cache_key,
        RULE,
        lambda: load_search(request, params),
        retry=services.retry,
        tags=lambda page: product_tags(page["results"]),
    )
    if params.q is not None and params.cursor is None and response.status_code in (200, 304):
        # The page just served (a 304 has no body): the entry it came from, or a newer one.
        served = services.cache.last_good(tenant_key(request, cache_key))
        await record_search(
            request, params.q, principal, served is not None and has_results(served)
        )
    return response


FIRST_RESULT = b'{"results":[{'


def has_results(page: Rendered) -> bool:
    """Whether a rendered search page lists a product: `load_search`'s document renders
    `results` first, so a page with results starts with FIRST_RESULT. Cheaper than parsing
    the page again, and any other form (an empty page, a changed layout) counts as none."""
    return page.body.startswith(FIRST_RESULT)


async def record_search(
    request: Request, q: str, principal: Principal | None, had_results: bool
) -> None:
    """Buffer a successful first page (memory or Redis; refresh_views writes the buffers):
    the signed-in user's history, and, when it found something, one count for its client."""
    query = normalise_query(q)
    if not query or text_problem(query) is not None:
        return  # nothing the database could store
    services = services_of(request)
    tenant = tenant_of(request.scope).id
    if principal is not None:
        await services.search_history.record(history_entry(principal.sub, query, tenant))
    if not had_results:
        return
    settings = services.settings
    client = client_hash(
        principal.sub if principal is not None else None,
        client_ip(request.scope, settings.trusted_proxies),
        settings.cursor_secret,
    )
    if client is not None:
        await services.search_counts.record(search_count_entry(query, client, tenant))


POPULAR_SQL = b"""
SELECT coalesce(json_agg(json_build_object(
        'query', query, 'count', total_count,
        'trending', current_count >= 3 AND current_count > 1.5 * previous_count
    ) ORDER BY total_count DESC, query), '[]') AS searches
FROM (SELECT p.query, p.total_count, p.current_count, p.previous_count
      FROM popular_searches p
      WHERE p.tenant_id = current_tenant_id() AND p.peak_clients >= %s
        AND NOT EXISTS (SELECT FROM hidden_searches h
                        WHERE h.tenant_id = p.tenant_id AND h.query = p.query)
      ORDER BY p.total_count DESC, p.query LIMIT %s) ranked
"""


async def load_popular(request: Request) -> dict[str, Any]:
    """Queries at least POPULAR_SEARCH_MIN_CLIENTS distinct clients searched within one
    period, not hidden by an admin, most clients first."""
    services = services_of(request)
    args = [services.settings.popular_search_min_clients, POPULAR_LIMIT]
    async with services.reads.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        row = await (await conn.execute(POPULAR_SQL, args)).fetchone()
    return {"searches": row["searches"] if row else []}


async def popular(request: Request) -> Response:
    services = services_of(request)
    return await serve_cached(
        request,
        services.cache,
        POPULAR_CACHE_KEY,
        POPULAR_RULE,
        lambda: load_popular(request),
        retry=services.retry,
    )


routes = starlette_routes("search", by_name(search, popular))
app = build_app(routes)
handler = lambda_handler(app, "search")
