"""Where an invocation's time goes: py-spy's samples of a worker invoking one route over and
over, each sample given to the part of the request path (`PARTS`) it was taken in.

py-spy samples from outside the process, so unlike cProfile it adds nothing to each call: a part
made of many small calls (PyJWT's checks of the token, character by character) is not inflated.
It pauses the process for each sample (its default), so each stack is whole and consistent:
reading it while it runs (`--nonblocking`) put samples on the lines that make system calls.

A sample belongs to its innermost frame's part (the first `PARTS` entry whose path fragment
the frame's file contains); builtins are not frames, and a frame of the standard library
(asyncio apart) belongs to the nearest caller that has a part, so `json.dumps` called by a
response counts as the response. Only samples taken inside an invocation count (under the
worker's `invoke_all`): not the copying of events.
"""

from __future__ import annotations

import re
import sysconfig
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stub database", ("bench/lambda_overhead/stub.py",)),
    ("Lambda entry point (edgemart.invocation)", ("edgemart/invocation.py",)),
    ("EMF export (edgemart.emf, Powertools Metrics)", ("edgemart/emf.py", "powertools/metrics")),
    ("Lambda adapter (edgemart.lambdaadapter)", ("edgemart/lambdaadapter.py",)),
    ("Mangum", ("mangum/",)),
    ("asyncio (the event loop, the task)", ("/asyncio/", "selectors.py")),
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
    ("route inputs (edgemart.requestinputs)", ("edgemart/requestinputs.py",)),
    ("JSON body, text rules (edgemart.validation)", ("edgemart/validation.py",)),
    ("JWT (edgemart.auth, PyJWT, cryptography)", ("edgemart/auth.py", "/jwt/", "cryptography")),
    ("idempotency fingerprint (edgemart.idempotency)", ("edgemart/idempotency.py",)),
    (
        "cache lookup, cached response (edgemart.cache, tenancy)",
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
    ("route handler (functions/)", ("/functions/",)),
    ("Starlette (app, router, request, response)", ("starlette/",)),
    ("Powertools event handler", ("powertools/event_handler", "powertools/utilities")),
)
OTHER = "other"
LOOP_FUNCTION = "invoke_all"
"""The worker's loop of invocations: samples outside it are not an invocation's."""

_STDLIB = sysconfig.get_paths()["stdlib"]
_FRAME = re.compile(r"(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int


def parse_frame(text: str) -> Frame:
    """A frame of py-spy's raw output: `function (file:line)`."""
    found = _FRAME.fullmatch(text)
    if found is None:
        return Frame(text, "", 0)
    return Frame(found["function"], found["file"], int(found["line"] or 0))


def parse_raw(text: str) -> list[tuple[list[Frame], int]]:
    """py-spy's `--format raw`: a line per distinct stack, outermost frame first, `;`-separated,
    then the number of samples."""
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append(([parse_frame(frame) for frame in stack.split(";")], int(count)))
    return samples


def part_of(file: str) -> str | None:
    """The part a frame of `file` belongs to; None for the standard library (asyncio apart),
    which belongs to its caller."""
    normal = file.replace("\\", "/")
    for name, fragments in PARTS:
        if any(fragment in normal for fragment in fragments):
            return name
    if normal.startswith(_STDLIB) or normal.startswith("<"):
        return None
    return OTHER


def invocation_frames(stack: list[Frame]) -> list[Frame]:
    """The frames under the worker's loop: empty for a sample taken outside an invocation."""
    for index, frame in enumerate(stack):
        if frame.function == LOOP_FUNCTION and frame.file.endswith("worker.py"):
            return stack[index + 1 :]
    return []


def part_of_sample(frames: list[Frame]) -> str:
    for frame in reversed(frames):
        part = part_of(frame.file)
        if part is not None:
            return part
    return OTHER


def part_shares(samples: Iterable[tuple[list[Frame], int]]) -> dict[str, float]:
    """Each part's share of the samples taken inside invocations."""
    counts: Counter[str] = Counter()
    for stack, count in samples:
        frames = invocation_frames(stack)
        if frames:
            counts[part_of_sample(frames)] += count
    total = sum(counts.values())
    return {name: count / total for name, count in counts.most_common()}


def top_functions(
    samples: Iterable[tuple[list[Frame], int]], count: int
) -> list[tuple[str, float]]:
    """The `count` innermost frames (where the time was spent, builtins they call included)
    sampled most often inside invocations, each with its share."""
    counts: Counter[str] = Counter()
    for stack, number in samples:
        frames = invocation_frames(stack)
        if frames:
            counts[label(frames[-1])] += number
    total = sum(counts.values())
    return [(name, number / total) for name, number in counts.most_common(count)]


def label(frame: Frame) -> str:
    return f"{shortened(frame.file)}:{frame.line}({frame.function})"


def shortened(file: str) -> str:
    """A file's path from its package on: `edgemart/requestcontext.py`, `jwt/api_jws.py`,
    `asyncio/base_events.py`."""
    normal = file.replace("\\", "/")
    for marker in ("site-packages/", "layers/edgemart/", _STDLIB + "/"):
        if marker in normal:
            return normal.split(marker, 1)[1]
    for marker in ("/functions/", "/bench/"):
        if marker in normal:
            return marker.strip("/") + "/" + normal.split(marker, 1)[1]
    return normal
