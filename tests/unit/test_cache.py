import asyncio

import pytest

from edgemart.cache import CACHE_RULES, Rendered, TTLCache, if_none_match_hits, strong_etag


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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expiry_keeps_the_last_good_copy() -> None:
    clock = Clock()
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
        return await asyncio.gather(*(cache.get_or_load("k", 60, loader) for _ in range(100)))

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
            *(cache.get_or_load("k", 60, loader) for _ in range(5)), return_exceptions=True
        )
        return first, await cache.get_or_load("k", 60, loader)

    first, second = asyncio.run(run())
    assert all(isinstance(result, RuntimeError) for result in first)
    assert second.body == b"2"
