"""The rate-limit groups and their default limits: per minute, keyed by client IP or by user.

The route table (edgemart.routetable) puts routes in these groups; settings accepts a
`RATE_LIMIT_<GROUP>` override for each of them. Pure data, so settings can import it.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgemart.ratelimit.window import KeyKind

DEFAULT_POLICIES: Mapping[str, tuple[int, KeyKind]] = {
    "home": (200, "ip"),
    "search": (60, "ip"),
    "store": (100, "ip"),
    "listings": (30, "user"),
    "purchases": (20, "user"),
    "admin": (30, "user"),
}
