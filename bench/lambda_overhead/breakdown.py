"""Where an invocation's time goes: cProfile's own time of every function, gathered into the
parts of the request path (`PARTS`).

A function belongs to the first part whose path fragment its file contains. Builtins and
the standard library (but asyncio, which is a part of its own) belong to whoever called them:
their time is split over their callers in the proportions cProfile recorded per caller, so
`json.dumps` called by the EMF export counts as EMF, called by a response as the response.
cProfile adds a fixed cost to every call, so parts made of many small calls come out larger
than they are; the shares are a map, the timed rounds are the measurement.
"""

from __future__ import annotations

import cProfile
import pstats
import sysconfig
from collections.abc import Callable, Mapping
from typing import Any

Func = tuple[str, int, str]
"""cProfile's key of a function: (file, line, name)."""

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("benchmark loop", ("bench/lambda_overhead/worker.py",)),
    ("stub database", ("bench/lambda_overhead/stub.py",)),
    ("Lambda entry point (edgemart.invocation)", ("edgemart/invocation.py",)),
    ("EMF export (edgemart.emf, Powertools Metrics)", ("edgemart/emf.py", "powertools/metrics")),
    ("Lambda adapter (edgemart)", ("edgemart/lambdaadapter.py",)),
    ("Mangum", ("mangum/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
    ("Powertools Logger, log keys", ("powertools/logging", "edgemart/logging.py")),
    ("request id", ("edgemart/requestid.py",)),
    ("access log", ("edgemart/accesslog.py",)),
    ("rate limiter", ("edgemart/ratelimit/",)),
    (
        "metrics table (recording, and the drain before the EMF export)",
        ("edgemart/requestmetrics.py", "edgemart/metrics.py"),
    ),
    (
        "request-context middleware",
        ("edgemart/requestcontext.py", "edgemart/bodylimit.py", "edgemart/clientip.py"),
    ),
    ("route inputs (edgemart.requestinputs, validation)", ("edgemart/requestinputs.py",)),
    ("JSON body (edgemart.validation)", ("edgemart/validation.py",)),
    ("JWT (edgemart.auth, PyJWT, cryptography)", ("edgemart/auth.py", "/jwt/", "cryptography")),
    ("idempotency fingerprint (edgemart.idempotency)", ("edgemart/idempotency.py",)),
    (
        "cache lookup, cached response",
        ("edgemart/cache.py", "edgemart/tenancy.py", "edgemart/tenantscope.py"),
    ),
    (
        "database wrapper (edgemart.db, breaker, retry)",
        ("edgemart/db.py", "edgemart/breaker.py", "edgemart/retry.py"),
    ),
    (
        "after the write (Services.invalidate, changes, read routing)",
        ("edgemart/services.py", "edgemart/changes.py", "edgemart/readrouting.py"),
    ),
    ("errors, problem bodies (edgemart.errors)", ("edgemart/errors.py",)),
    ("route handler (functions/)", ("functions/",)),
    ("Starlette (app, router, request, response)", ("starlette/",)),
    ("Powertools event handler", ("powertools/event_handler", "powertools/utilities")),
)
OTHER = "other"
EXCLUDED = "benchmark loop"
"""Calling the handlers: not part of an invocation."""

_STDLIB = sysconfig.get_paths()["stdlib"]


def part_of(file: str) -> str | None:
    """The part a function of `file` belongs to; None for builtins and the standard library
    (asyncio apart), which belong to their callers."""
    normal = file.replace("\\", "/")
    for name, fragments in PARTS:
        if any(fragment in normal for fragment in fragments):
            return name
    if normal.startswith(("~", "<")) or normal.startswith(_STDLIB):
        return None
    return OTHER


def attribute(stats: Mapping[Func, Any]) -> dict[str, float]:
    """Seconds of own time per part, each caller-attributed function's time split over its
    callers (pure: `stats` is `pstats.Stats.stats`)."""
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func, visiting: frozenset[Func]) -> dict[str, float]:
        """How `func`'s own time divides among parts, as fractions summing to 1."""
        if func in memo:
            return memo[func]
        part = part_of(func[0])
        if part is not None:
            return {part: 1.0}
        callers: Mapping[Func, tuple[Any, ...]] = stats[func][4]
        weights = {caller: edge[2] for caller, edge in callers.items() if caller not in visiting}
        total = sum(weights.values())
        if not weights or total <= 0:
            return {OTHER: 1.0}
        result: dict[str, float] = {}
        for caller, weight in weights.items():
            for name, share in shares(caller, visiting | {func}).items():
                result[name] = result.get(name, 0.0) + share * weight / total
        memo[func] = result
        return result

    seconds: dict[str, float] = {}
    for func, (_, _, own, _, _) in stats.items():
        for name, share in shares(func, frozenset()).items():
            seconds[name] = seconds.get(name, 0.0) + own * share
    return seconds


def profile(call: Callable[[], None]) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.runcall(call)
    return pstats.Stats(profiler)


def part_shares(stats: pstats.Stats) -> dict[str, float]:
    """Each part's share of an invocation's profiled time (the benchmark loop left out)."""
    seconds = attribute(stats.stats)  # type: ignore[attr-defined]
    seconds.pop(EXCLUDED, None)
    total = sum(seconds.values())
    return {name: value / total for name, value in seconds.items()}


def top_functions(stats: pstats.Stats, count: int) -> list[tuple[str, float]]:
    """The `count` functions with the most own time, each as `file:line(name)` (file from its
    package on) and its share of the profiled time."""
    table: Mapping[Func, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for func, entry in table.items() if part_of(func[0]) != EXCLUDED)
    ranked = sorted(table.items(), key=lambda item: item[1][2], reverse=True)
    return [
        (label(func), entry[2] / total)
        for func, entry in ranked[:count]
        if part_of(func[0]) != EXCLUDED
    ]


def label(func: Func) -> str:
    file, line, name = func
    if file.startswith(("~", "<")):
        return name
    short = shortened(file)
    return f"{short}:{line}({name})"


def shortened(file: str) -> str:
    """A file's path from its package on: `edgemart/requestcontext.py`,
    `starlette/routing.py`, `asyncio/base_events.py`."""
    normal = file.replace("\\", "/")
    for marker in ("site-packages/", "layers/edgemart/", _STDLIB + "/", "/work/"):
        if marker in normal:
            return normal.split(marker, 1)[1]
    return normal
