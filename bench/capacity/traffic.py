"""The traffic model as wrk's Lua script: what each request asks for, and, for an offered
rate, when it is sent.

Reads: 30% home, 30% search (a fixed list of queries over the demo catalog's words; a share
of them made to miss every cache), 30% product detail (skewed: a few products get most
views), 10% store pages. Purchases: `POST /purchases` by one of the buyers (a bearer token
each), one unit of a product drawn evenly from the purchase products, each with an
Idempotency-Key never sent before. A mix is a share of purchases among reads.

**Pacing** (an open loop emulated in wrk, which has only closed loops): the script's
`delay()` hands each request, as its connection comes free, the next slot of a fixed
schedule (`rate` per second from the first request) and holds the request until then. With
more connections than the rate needs, the schedule and not the server sets the rate. When
every connection is busy, a request leaves late; how late is recorded (`late_ms`), since
wrk's latency starts only when a request is sent (coordinated omission: a server stall
delays the requests that would have arrived during it, which then do not count its wait).

**Counting**: wrk counts socket errors and (in `status`) responses from 400 up; the script
counts every status (`response()`) and prints, from `done()`, every figure the run is
judged on as `capacity <name> <value>` lines (`loadgen.parse_report`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

READ_SHARES = {"home": 0.3, "search": 0.3, "product": 0.3, "store": 0.1}
"""The reads' proportions (the traffic model of issue #26)."""
PRODUCT_SKEW = 0.9
"""Zipf exponent of product views: the k-th product's share goes as 1 / k^PRODUCT_SKEW."""
PICK_TABLE = 20_000
"""Entries of the table product views are drawn from evenly (the skew is in the repeats)."""
MISS_PRICE = (500_000_000, 1_000_000_000)
"""A cache-missing search adds `max_price` drawn from here: above every demo price (a filter
that keeps every match), so the search does a real search's work, under a cache key no
other request has had."""
LATE_BUCKETS_MS = 10_000
"""Lateness is counted per whole millisecond up to here (beyond, in the last bucket)."""


@dataclass(frozen=True)
class Mix:
    """One traffic mix: the share of purchases among its requests."""

    name: str
    label: str
    purchase_share: float
    closed_loop_connections: int
    """The connections the issue's closed-loop figure was measured at (reported beside)."""
    target: float | None = None
    """Requests/s the seeds set as a target for this mix at p99 ≤ 100 ms, if any."""


MIXES = (
    Mix("reads", "reads only", 0.0, 64),
    Mix("purchases", "purchases only", 1.0, 8),
    Mix("4:1", "4 reads : 1 purchase", 0.2, 32, target=2_500),
)


@dataclass(frozen=True)
class Targets:
    """What the requests ask for: paths and query strings, ids, and the buyers' tokens."""

    searches: Sequence[str]
    """Query strings of `/marketplace/search` (`q=...&sort=...`)."""
    products: Sequence[str]
    """Product ids for product detail, most viewed first."""
    stores: Sequence[str]
    """Store slugs for store pages."""
    tokens: Sequence[str]
    """One bearer token per buyer."""
    purchase_products: Sequence[str]
    """Product ids purchases draw from, evenly."""


def product_picks(count: int, skew: float = PRODUCT_SKEW, size: int = PICK_TABLE) -> list[int]:
    """Indexes (1-based, as Lua counts) into `count` products, each repeated in proportion
    to 1 / rank^skew (at least once): drawing evenly from the result is the skewed draw."""
    weights = [1 / (rank + 1) ** skew for rank in range(count)]
    total = sum(weights)
    picks: list[int] = []
    for index, weight in enumerate(weights, start=1):
        picks += [index] * max(1, round(size * weight / total))
    return picks


def lua_script(
    targets: Targets,
    purchase_share: float,
    *,
    rate: float,
    threads: int,
    miss_share: float,
    nonce: str,
    seed: int,
) -> str:
    """The Lua script of one wrk run: `purchase_share` of the requests purchases, the rest
    reads; `rate` requests/s in all (`threads` sharing it), or a closed loop when 0;
    `miss_share` of the searches missing every cache; `nonce` starts every Idempotency-Key of
    the run (unique across runs); `seed` the draws."""
    per_thread_interval_ms = 1000.0 * threads / rate if rate > 0 else 0.0
    thresholds = _read_thresholds()
    constants = {
        "PURCHASE_SHARE": purchase_share,
        "HOME_BELOW": thresholds[0],
        "SEARCH_BELOW": thresholds[1],
        "PRODUCT_BELOW": thresholds[2],
        "MISS_SHARE": miss_share,
        "MISS_LOW": MISS_PRICE[0],
        "MISS_HIGH": MISS_PRICE[1],
        "INTERVAL_MS": per_thread_interval_ms,
        "LATE_BUCKETS": LATE_BUCKETS_MS,
        "SEED": seed,
    }
    lines = [f"local {name} = {_lua_number(value)}" for name, value in constants.items()]
    lines += [
        f"local NONCE = {_lua_string(nonce)}",
        f"local SEARCHES = {_lua_strings(targets.searches)}",
        f"local PRODUCTS = {_lua_strings(targets.products)}",
        f"local PRODUCT_PICKS = {{{','.join(map(str, product_picks(len(targets.products))))}}}",
        f"local STORES = {_lua_strings(targets.stores)}",
        f"local TOKENS = {_lua_strings(['Bearer ' + token for token in targets.tokens])}",
        f"local PURCHASE_PRODUCTS = {_lua_strings(targets.purchase_products)}",
    ]
    return "\n".join(lines) + "\n" + LUA_BODY


def warm_script(targets: Targets) -> str:
    """A closed-loop Lua script asking for every read path in turn (home, each search, product
    and store page), so every cache holds them before the measurements."""
    paths = ["/marketplace/home"]
    paths += [f"/marketplace/search?{query}" for query in targets.searches]
    paths += [f"/products/{product}" for product in targets.products]
    paths += [f"/stores/{slug}" for slug in targets.stores]
    return f"local PATHS = {_lua_strings(paths)}\n" + WARM_BODY


def _read_thresholds() -> tuple[float, float, float]:
    home = READ_SHARES["home"]
    search = home + READ_SHARES["search"]
    return home, search, search + READ_SHARES["product"]


def _lua_number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _lua_string(text: str) -> str:
    # JSON's escapes are Lua's for the printable ASCII these strings hold.
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"not printable ASCII: {text!r}")
    return json.dumps(text)


def _lua_strings(texts: Sequence[str]) -> str:
    if not texts:
        return "{}"
    return "{" + ",".join(_lua_string(text) for text in texts) + "}"


LUA_BODY = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } capacity_timespec;
int clock_gettime(int clock_id, capacity_timespec *now);
]]
local clock = ffi.new("capacity_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

-- Globals: done() reads them from each thread (thread:get).
statuses = {}
late = {}
purchases = 0
misses = 0

local prebuilt_home, prebuilt_searches, prebuilt_products, prebuilt_stores
local key_prefix
local next_slot = nil

-- In the main state: number the threads and keep them for done().
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  local number = thread_number or 1
  math.randomseed(SEED * 1000 + number)
  key_prefix = NONCE .. "-" .. number .. "-"
  wrk.headers["Accept-Encoding"] = "gzip"
  prebuilt_home = wrk.format("GET", "/marketplace/home")
  prebuilt_searches, prebuilt_products, prebuilt_stores = {}, {}, {}
  for i, query in ipairs(SEARCHES) do
    prebuilt_searches[i] = wrk.format("GET", "/marketplace/search?" .. query)
  end
  for i, id in ipairs(PRODUCTS) do
    prebuilt_products[i] = wrk.format("GET", "/products/" .. id)
  end
  for i, slug in ipairs(STORES) do
    prebuilt_stores[i] = wrk.format("GET", "/stores/" .. slug)
  end
end

local function purchase()
  purchases = purchases + 1
  local headers = {
    ["Authorization"] = TOKENS[math.random(#TOKENS)],
    ["Idempotency-Key"] = key_prefix .. purchases,
    ["Content-Type"] = "application/json",
    ["Accept-Encoding"] = "gzip",
  }
  local product = PURCHASE_PRODUCTS[math.random(#PURCHASE_PRODUCTS)]
  local body = '{"product_id":"' .. product .. '","quantity":1}'
  return wrk.format("POST", "/purchases", headers, body)
end

local function search()
  local index = math.random(#SEARCHES)
  if MISS_SHARE > 0 and math.random() < MISS_SHARE then
    misses = misses + 1
    local price = math.random(MISS_LOW, MISS_HIGH)
    return wrk.format("GET", "/marketplace/search?" .. SEARCHES[index] .. "&max_price=" .. price)
  end
  return prebuilt_searches[index]
end

function request()
  if PURCHASE_SHARE > 0 and math.random() < PURCHASE_SHARE then
    return purchase()
  end
  local roll = math.random()
  if roll < HOME_BELOW then
    return prebuilt_home
  elseif roll < SEARCH_BELOW then
    return search()
  elseif roll < PRODUCT_BELOW then
    return prebuilt_products[PRODUCT_PICKS[math.random(#PRODUCT_PICKS)]]
  end
  return prebuilt_stores[math.random(#prebuilt_stores)]
end

-- Only paced runs define delay(): wrk then calls it before every request.
if INTERVAL_MS > 0 then
  function delay()
    local now = now_ms()
    if next_slot == nil then
      next_slot = now
    end
    local slot = next_slot
    next_slot = slot + INTERVAL_MS
    local wait = slot - now
    local bucket = 0
    if wait < 0 then
      bucket = math.min(math.floor(-wait), LATE_BUCKETS)
    end
    late[bucket] = (late[bucket] or 0) + 1
    if wait <= 0 then
      return 0
    end
    return math.floor(wait)
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total_statuses, total_late = {}, {}
  local total_purchases, total_misses = 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total_statuses[status] = (total_statuses[status] or 0) + count
    end
    for bucket, count in pairs(thread:get("late")) do
      total_late[bucket] = (total_late[bucket] or 0) + count
    end
    total_purchases = total_purchases + thread:get("purchases")
    total_misses = total_misses + thread:get("misses")
  end
  local out = {}
  local function put(name, value)
    out[#out + 1] = string.format("capacity %s %s", name, tostring(value))
  end
  put("requests", summary.requests)
  put("duration_us", summary.duration)
  for _, name in ipairs({"connect", "read", "write", "status", "timeout"}) do
    put("error_" .. name, summary.errors[name])
  end
  for _, p in ipairs({50, 90, 99, 99.9}) do
    put("latency_us_p" .. p, latency:percentile(p))
  end
  put("latency_us_max", latency.max)
  put("purchases_sent", total_purchases)
  put("searches_missing", total_misses)
  for status, count in pairs(total_statuses) do
    put("status_" .. status, count)
  end
  for bucket, count in pairs(total_late) do
    put("late_ms_" .. bucket, count)
  end
  io.write(table.concat(out, "\n") .. "\n")
end
"""

WARM_BODY = r"""
local next_path = 0
wrk.headers["Accept-Encoding"] = "gzip"
function request()
  next_path = next_path % #PATHS + 1
  return wrk.format("GET", PATHS[next_path])
end
"""
