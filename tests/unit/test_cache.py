from __future__ import annotations

import asyncio
import gzip
from typing import TYPE_CHECKING, Any

import pytest
from starlette.requests import Request

from edgemart.cache import (
    CACHE_RULES,
    FROM_L2,
    MISS,
    STALE,
    TAGS_HEADER,
    Filled,
    LoadTimeoutError,
    Render,
    Rendered,
    TTLCache,
    cached_response,
    if_none_match_hits,
    strong_etag,
)
from tests.conftest import FakeClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from edgemart.cache import Tags


async def load(
    cache: TTLCache,
    key: str,
    ttl_s: float,
    loader: Callable[[], Awaitable[Any]],
    tags: Tags | None = None,
) -> Rendered:
    """The cached page of `key`, loaded by `loader` on a miss."""
    return (await cache.get_or_fill(key, ttl_s, loader, tags)).rendered


def test_cache_control_per_design_table() -> None:
    assert CACHE_RULES["home"].cache_control == (
        "public, max-age=0, s-maxage=60, stale-while-revalidate=300, stale-if-error=86400"
    )
    search = CACHE_RULES["search"]
    assert (search.s_maxage, search.stale_while_revalidate, search.stale_if_error) == (30, 60, 3600)
    store = CACHE_RULES["store_page"]
    assert (store.s_maxage, store.stale_while_revalidate, store.stale_if_error) == (120, 600, 86400)


def test_strong_etag_depends_on_the_body() -> None:
    assert strong_etag(b"a") == strong_etag(b"a") != strong_etag(b"b")
    assert strong_etag(b"a").startswith('"') and not strong_etag(b"a").startswith("W/")


@pytest.mark.parametrize(
    ("header", "hit"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"x",W/"abc"', True),
        ("*", True),
        ('"abcd"', False),
        ('"x"', False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match(header: str | None, hit: bool) -> None:
    assert if_none_match_hits(header, '"abc"') is hit


def test_ttl_expiry_keeps_the_last_good_copy() -> None:
    clock = FakeClock(1000.0)
    cache = TTLCache(clock=clock)
    cache.put("k", Rendered.of({"v": 1}, now=clock.now), ttl_s=10)
    assert cache.fresh("k") is not None
    clock.now += 10
    assert cache.fresh("k") is None
    last = cache.last_good("k")
    assert last is not None and last.body == b'{"v":1}'
    cache.invalidate("k")
    assert cache.last_good("k") is None


def test_lru_bound() -> None:
    cache = TTLCache(max_entries=3)
    for index in range(10):
        cache.put(f"k{index}", Rendered.of(index, now=0), ttl_s=60)
    assert len(cache) == 3 and cache.last_good("k9") is not None


def test_single_flight_runs_one_load_for_concurrent_misses() -> None:
    cache = TTLCache()
    calls = 0

    async def loader() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"n": calls}

    async def run() -> list[Rendered]:
        return await asyncio.gather(*(load(cache, "k", 60, loader) for _ in range(100)))

    results = asyncio.run(run())
    assert calls == 1
    assert {r.body for r in results} == {b'{"n":1}'}


def test_a_failed_load_reaches_every_waiter_and_is_retried_next_time() -> None:
    cache = TTLCache()
    attempts = 0

    async def loader() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise RuntimeError("database down")
        return attempts

    async def run() -> tuple[list[object], Rendered]:
        first = await asyncio.gather(
            *(load(cache, "k", 60, loader) for _ in range(5)), return_exceptions=True
        )
        return first, await load(cache, "k", 60, loader)

    first, second = asyncio.run(run())
    assert all(isinstance(result, RuntimeError) for result in first)
    assert second.body == b"2"


def test_a_stuck_load_is_abandoned_after_the_wait_bound_and_the_next_caller_loads_again() -> None:
    cache = TTLCache(load_wait_s=0.2)
    calls = 0
    cancelled: list[bool] = []

    async def loader() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # stuck for good, as on a wait nothing will ever end
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
        return calls

    async def run() -> tuple[list[object], Rendered]:
        async with asyncio.timeout(5):  # without the bound, every caller waits for good
            stuck = await asyncio.gather(
                *(load(cache, "k", 60, loader) for _ in range(5)), return_exceptions=True
            )
            return stuck, await load(cache, "k", 60, loader)

    stuck, fresh = asyncio.run(run())
    assert all(isinstance(result, LoadTimeoutError) for result in stuck), stuck
    assert cancelled == [True]  # the stuck load was cancelled, once
    assert fresh.body == b"2"  # a later caller does not join the abandoned load


def test_a_caller_joining_a_load_late_gets_the_timeout_once_it_is_abandoned() -> None:
    cache = TTLCache(load_wait_s=0.5)

    async def loader() -> int:
        await asyncio.Event().wait()
        return 0

    async def late() -> object:
        await asyncio.sleep(0.4)  # joins the load 0.4 s in: its own bound ends at 0.9 s
        return await load(cache, "k", 60, loader)

    async def run() -> tuple[list[object], float]:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(load(cache, "k", 60, loader), late(), return_exceptions=True)
        return results, asyncio.get_running_loop().time() - started

    results, elapsed = asyncio.run(run())
    assert all(isinstance(result, LoadTimeoutError) for result in results), results
    assert elapsed < 0.8  # told when the load was abandoned (0.5 s), not at its own bound


def test_a_stuck_load_is_served_stale_when_a_copy_exists() -> None:
    from edgemart.cache import serve_cached

    now = 1000.0
    cache = TTLCache(clock=lambda: now, load_wait_s=0.1)
    stuck = False

    async def loader() -> dict[str, str]:
        if stuck:
            await asyncio.Event().wait()
        return {"page": "home"}

    async def serve() -> tuple[int, str | None]:
        response = await serve_cached(request_with({}), cache, "home", RULE, loader)
        return response.status_code, response.headers.get("x-edgemart-stale")

    assert asyncio.run(serve()) == (200, None)
    now += RULE.s_maxage + 1
    stuck = True
    assert asyncio.run(serve()) == (200, "true")  # the last good copy, after 0.1 s


def rendered(body: str) -> Rendered:
    return Rendered.of(body, now=0.0)


def test_invalidation_by_tag_and_prefix() -> None:
    cache = TTLCache(clock=lambda: 0.0)
    cache.put("search?q=lamp", rendered("a"), 30, tags=["product:1", "product:2"])
    cache.put("search?q=oak", rendered("b"), 30, tags=["product:3"])
    cache.put("store:s?", rendered("c"), 30, tags=["store:s", "product:2"])
    cache.put("product:9", rendered("d"), 30, tags=["product:9"])
    cache.invalidate(tags=["product:2"])
    assert cache.fresh("search?q=lamp") is None and cache.fresh("store:s?") is None
    assert cache.fresh("search?q=oak") is not None and cache.fresh("product:9") is not None
    cache.invalidate(prefixes=["search?"])
    assert cache.fresh("search?q=oak") is None and cache.fresh("product:9") is not None
    cache.invalidate(tags=["product:2", "product:1"])  # nothing left to drop: no error
    assert len(cache) == 1


def test_a_replaced_or_evicted_entry_leaves_no_tag_behind() -> None:
    cache = TTLCache(max_entries=1, clock=lambda: 0.0)
    cache.put("k", rendered("a"), 30, tags=["product:1"])
    cache.put("k", rendered("b"), 30, tags=["product:2"])
    cache.invalidate(tags=["product:1"])
    assert cache.fresh("k") is not None  # its old tag no longer names it
    cache.put("other", rendered("c"), 30, tags=["product:3"])  # evicts "k"
    cache.put("k", rendered("d"), 30)
    cache.invalidate(tags=["product:2"])
    assert cache.fresh("k") is not None


def test_a_load_running_across_an_invalidation_is_not_kept_fresh() -> None:
    """The load read the data before the write: its waiters get it, later callers load
    again instead of joining it or reading its result from the cache."""

    async def scenario() -> tuple[int, str, str]:
        cache = TTLCache()
        started, release = asyncio.Event(), asyncio.Event()
        loads = 0

        async def slow_load() -> str:
            nonlocal loads
            loads += 1
            if loads == 1:
                started.set()
                await release.wait()
                return "before the write"
            return "after the write"

        first = asyncio.ensure_future(load(cache, "k", 60, slow_load))
        await started.wait()  # the load has read: a write now commits
        cache.invalidate(tags=["product:1"])
        second = asyncio.ensure_future(load(cache, "k", 60, slow_load))
        await asyncio.sleep(0)
        release.set()
        old, new = await first, await second
        third = await load(cache, "k", 60, slow_load)
        return loads, old.body.decode(), f"{new.body.decode()} {third.body.decode()}"

    loads, old, later = asyncio.run(scenario())
    assert old == '"before the write"'
    assert later == '"after the write" "after the write"'
    assert loads == 2


def test_tags_come_from_the_loaded_document() -> None:
    async def scenario() -> TTLCache:
        cache = TTLCache()
        await load(
            cache,
            "search?q=x",
            60,
            lambda: asyncio.sleep(0, result={"results": [{"id": "p1"}]}),
            lambda page: [f"product:{item['id']}" for item in page["results"]],
        )
        return cache

    cache = asyncio.run(scenario())
    assert cache.fresh("search?q=x") is not None
    cache.invalidate(tags=["product:p1"])
    assert cache.fresh("search?q=x") is None


BIG = {"items": [{"id": index, "title": f"walnut desk {index}"} for index in range(200)]}


def test_a_large_body_is_gzipped_once_when_rendered() -> None:
    rendered = Rendered.of(BIG, now=0)
    assert rendered.gzip_body is not None
    assert gzip.decompress(rendered.gzip_body) == rendered.body
    assert len(rendered.gzip_body) < len(rendered.body) // 3
    # Deterministic (no timestamp in the gzip header): every process makes the same bytes.
    assert Rendered.of(BIG, now=5).gzip_body == rendered.gzip_body


def test_the_gzip_representation_has_its_own_strong_etag() -> None:
    rendered = Rendered.of(BIG, now=0)
    assert rendered.gzip_etag is not None
    assert rendered.gzip_etag != rendered.etag
    assert rendered.gzip_etag.startswith('"') and rendered.gzip_etag.endswith('-gzip"')
    assert not if_none_match_hits(rendered.etag, rendered.gzip_etag)
    assert not if_none_match_hits(rendered.gzip_etag, rendered.etag)


def test_a_small_body_is_not_compressed() -> None:
    rendered = Rendered.of({"results": [], "next_cursor": None}, now=0)
    assert (rendered.gzip_body, rendered.gzip_etag) == (None, None)


def request_with(headers: dict[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


RULE = CACHE_RULES["home"]


def test_a_hit_sends_the_stored_gzip_bytes_without_compressing_again() -> None:
    rendered = Rendered.of(BIG, now=0)
    response = cached_response(request_with({"Accept-Encoding": "gzip, br"}), rendered, RULE)
    assert response.body is rendered.gzip_body
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["etag"] == rendered.gzip_etag
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-length"] == str(len(rendered.gzip_body or b""))


@pytest.mark.parametrize("accept", [None, "identity", "br", "gzip;q=0, *"])
def test_a_client_that_does_not_accept_gzip_gets_the_plain_body(accept: str | None) -> None:
    rendered = Rendered.of(BIG, now=0)
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    response = cached_response(request_with(headers), rendered, RULE)
    assert response.body is rendered.body
    assert "content-encoding" not in response.headers
    assert response.headers["etag"] == rendered.etag
    assert response.headers["vary"] == "Accept-Encoding"


def test_a_small_body_says_vary_though_it_is_never_compressed() -> None:
    rendered = Rendered.of({"searches": []}, now=0)
    response = cached_response(request_with({"Accept-Encoding": "gzip"}), rendered, RULE)
    assert response.body == b'{"searches":[]}'
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


def test_304_matches_the_representation_that_would_be_sent() -> None:
    rendered = Rendered.of(BIG, now=0)
    gzip_etag = rendered.gzip_etag or ""
    both = {"Accept-Encoding": "gzip"}
    hit = cached_response(request_with({**both, "If-None-Match": gzip_etag}), rendered, RULE)
    assert hit.status_code == 304 and hit.body == b""
    assert hit.headers["etag"] == gzip_etag and hit.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in hit.headers
    # The plain body's tag does not validate the gzip representation, nor the other way round.
    miss = cached_response(request_with({**both, "If-None-Match": rendered.etag}), rendered, RULE)
    assert miss.status_code == 200 and miss.headers["content-encoding"] == "gzip"
    plain = cached_response(request_with({"If-None-Match": gzip_etag}), rendered, RULE)
    assert plain.status_code == 200 and plain.body is rendered.body
    assert (
        cached_response(request_with({"If-None-Match": rendered.etag}), rendered, RULE).status_code
        == 304
    )


def test_each_lookup_counts_a_hit_a_miss_or_a_stale_serve() -> None:
    from psycopg import OperationalError

    from edgemart import metrics
    from edgemart.cache import serve_cached

    cache = TTLCache(clock=lambda: now)
    now = 1000.0
    failing = False

    async def loader() -> dict[str, str]:
        if failing:
            raise OperationalError("connection refused")
        return {"page": "home"}

    def lookups(result: str) -> float:
        return metrics.count(metrics.CACHE_LOOKUPS, layer="l1", cache_rule="home", result=result)

    async def serve(key: str) -> int:
        response = await serve_cached(request_with({}), cache, key, RULE, loader)
        return response.status_code

    before = {result: lookups(result) for result in ("hit", "miss", "stale")}
    assert asyncio.run(serve("home")) == 200  # miss: loaded
    assert asyncio.run(serve("home")) == 200  # hit
    now += RULE.s_maxage + 1
    failing = True
    assert asyncio.run(serve("home")) == 200  # stale: the last good copy
    with pytest.raises(OperationalError):
        asyncio.run(serve("other"))  # a miss with no copy to serve
    assert {result: lookups(result) - before[result] for result in before} == {
        "hit": 1,
        "miss": 2,
        "stale": 1,
    }


def test_a_page_names_its_tags_once_each_in_a_header() -> None:
    rendered = Rendered.of({"a": 1}, now=0, tags=["product:1", "store:s", "product:1"])
    assert rendered.tags == ("product:1", "store:s")
    response = cached_response(request_with({}), rendered, RULE)
    assert response.headers[TAGS_HEADER] == "product:1 store:s"
    stale = cached_response(request_with({}), rendered, RULE, stale=True, now=10)
    assert stale.headers[TAGS_HEADER] == "product:1 store:s"
    untagged = cached_response(request_with({}), Rendered.of({}, now=0), RULE)
    assert TAGS_HEADER.lower() not in untagged.headers


def test_an_entry_takes_its_tags_from_the_rendered_page() -> None:
    cache = TTLCache(clock=lambda: 0.0)
    cache.put("k", Rendered.of({}, now=0, tags=["product:1"]), 30)
    cache.invalidate(tags=["product:1"])
    assert cache.last_good("k") is None


class Fills:
    """A `TTLCache.fill` of the test's own: answers what the test sets, counting calls."""

    def __init__(self, filled: Filled | None = None) -> None:
        self.filled = filled
        self.calls: list[tuple[str, float, str, Rendered | None]] = []

    async def __call__(
        self, key: str, ttl_s: float, rule_name: str, render: Render, last_good: Rendered | None
    ) -> Filled:
        self.calls.append((key, ttl_s, rule_name, last_good))
        return self.filled if self.filled is not None else Filled(await render(), MISS)


def test_a_page_from_the_shared_cache_stays_fresh_only_for_the_rest_of_its_ttl() -> None:
    clock = FakeClock(1000.0)
    made_earlier = Rendered.of({"v": 1}, now=clock.now - 50)
    fills = Fills(Filled(made_earlier, FROM_L2))
    cache = TTLCache(clock=clock, fill=fills)
    filled = asyncio.run(cache.get_or_fill("k", 60, loader_of({"v": 2}), rule_name="home"))
    assert filled == Filled(made_earlier, FROM_L2)
    assert fills.calls == [("k", 60, "home", None)]
    clock.now += 9.9
    assert cache.fresh("k") is made_earlier
    clock.now += 0.2
    assert cache.fresh("k") is None


def test_a_render_the_shared_cache_refused_is_served_but_not_kept_fresh() -> None:
    """A write came while it rendered (the shared cache refused to store it)."""
    cache = TTLCache(clock=FakeClock(1000.0))
    refused = Rendered.of({"v": "old"}, now=cache.clock())
    cache.fill = Fills(Filled(refused, MISS, keep=False))
    assert asyncio.run(load(cache, "k", 60, loader_of(None))) is refused
    assert cache.fresh("k") is None and cache.last_good("k") is refused


def test_a_stale_copy_served_while_another_process_renders_is_not_stored_again() -> None:
    clock = FakeClock(1000.0)
    cache = TTLCache(clock=clock, trust=lambda as_of, now: True)
    old = Rendered.of({"v": 1}, now=clock.now)
    cache.put("k", old, 10)
    clock.now += 11
    fills = Fills(Filled(old, STALE))
    cache.fill = fills
    filled = asyncio.run(cache.get_or_fill("k", 10, loader_of(None)))
    assert filled.source == STALE and fills.calls[0][3] is old  # offered the trusted copy
    assert cache.fresh("k") is None  # still expired: the next request asks again


def loader_of(document: object) -> Any:
    async def load() -> object:
        return document

    return load


def test_serve_cached_tells_the_access_log_where_the_page_came_from() -> None:
    from psycopg import OperationalError

    from edgemart.cache import serve_cached

    clock = FakeClock(1000.0)
    cache = TTLCache(clock=clock)
    failing = False

    async def loader() -> dict[str, str]:
        if failing:
            raise OperationalError("connection refused")
        return {"page": "home"}

    def served(key: str) -> tuple[int, str]:
        request = request_with({})
        response = asyncio.run(serve_cached(request, cache, key, RULE, loader))
        return response.status_code, request.scope["state"]["cache"]

    assert served("home") == (200, "miss")
    assert served("home") == (200, "hit")
    cache.fill = Fills(Filled(Rendered.of({"page": "shared"}, now=clock.now), FROM_L2))
    assert served("other") == (200, "l2")
    clock.now += RULE.s_maxage + 1
    failing = True
    cache.fill = None
    assert served("home") == (200, "stale")


def test_an_l2_page_counts_as_an_l1_miss() -> None:
    from edgemart import metrics
    from edgemart.cache import serve_cached

    clock = FakeClock(1000.0)
    cache = TTLCache(clock=clock, fill=Fills(Filled(Rendered.of({}, now=clock.now), FROM_L2)))

    def l1(result: str) -> float:
        return metrics.count(metrics.CACHE_LOOKUPS, layer="l1", cache_rule="home", result=result)

    misses = l1("miss")
    asyncio.run(serve_cached(request_with({}), cache, "l2-page", RULE, loader_of(None)))
    assert l1("miss") == misses + 1


# ---- Tenants (decision 0043) ----


def tenant_request(tenant: object) -> Request:
    from edgemart.tenancy import TENANT_STATE_KEY

    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [],
            "state": {TENANT_STATE_KEY: tenant},
        }
    )


def test_serve_cached_keeps_each_tenant_s_page_under_its_own_key_and_tags() -> None:
    from edgemart.cache import TAGS_HEADER, TENANT_HEADER, serve_cached, tenant_key
    from edgemart.tenancy import DEFAULT_TENANT
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME, GLOBEX

    cache = TTLCache()
    pages = {}
    for tenant in (DEFAULT_TENANT, ACME, GLOBEX):
        request = tenant_request(tenant)
        response = asyncio.run(
            serve_cached(
                request,
                cache,
                "store:shoes?",
                RULE,
                loader_of({"tenant": tenant.slug}),
                tags=lambda page: ["store:shoes"],
            )
        )
        assert request.scope["state"]["cache"] == "miss"  # never another tenant's page
        pages[tenant.slug] = response
        assert tenant_key(request, "store:shoes?") == scoped(tenant, "store:shoes?")
        assert cache.fresh(scoped(tenant, "store:shoes?")) is not None
        assert response.headers[TAGS_HEADER] == scoped(tenant, "store:shoes")
    assert TENANT_HEADER not in pages["default"].headers  # as before tenancy
    assert pages["acme"].headers[TENANT_HEADER] == str(ACME.id)
    assert pages["globex"].headers[TENANT_HEADER] == str(GLOBEX.id)
    assert len(cache) == 3
