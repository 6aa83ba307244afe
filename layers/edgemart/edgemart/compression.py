"""gzip for the cacheable JSON bodies: the choice of encoding and the compression itself.

Only bodies the cache renders are compressed (`edgemart/cache.py`): they are the large ones
(the home document is 11.6 KB), they are compressed once when rendered and served from the
cache as bytes, and they are public, so compressing them cannot leak a secret through the
compressed length (BREACH). gzip only, from the standard library: Brotli would save a further
5-10% on these documents for a 5 MB native extension in every function's layer
(docs/decisions/0008-response-headers.md).
"""

from __future__ import annotations

import zlib
from functools import lru_cache

GZIP = "gzip"
# Smaller bodies gain little (a few hundred bytes) and can even grow with gzip's framing.
MIN_COMPRESS_BYTES = 1024
# zlib's default. On an 11.4 KB home-like document: 2,586 bytes in about 0.19 ms, once per
# render; level 9 saves 1% more, level 1 is three times faster but 13% larger.
GZIP_LEVEL = 6
_GZIP_WBITS = 31  # zlib with a gzip header and trailer (mtime 0: the same body, the same bytes)


def gzip_body(body: bytes) -> bytes | None:
    """The body gzipped, or None when it is too small to be worth it (or would not shrink)."""
    if len(body) < MIN_COMPRESS_BYTES:
        return None
    compressed = zlib.compress(body, GZIP_LEVEL, wbits=_GZIP_WBITS)
    return compressed if len(compressed) < len(body) else None


@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` (RFC 9110 §12.5.3) admits gzip: `gzip`, `x-gzip` or `*` with a
    non-zero weight, and gzip not refused by name. Clients send a handful of distinct values,
    so the answers are cached."""
    if not accept_encoding:
        return False
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            named = max(named or 0.0, _weight(params))
        elif coding == "*":
            wildcard = _weight(params)
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


def _weight(params: str) -> float:
    """The `q` of one coding's parameters (1 when absent; 0 when unreadable: a client that
    sends a weight we cannot read gets the uncompressed body, which every client accepts)."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return 0.0
            return weight if 0.0 <= weight <= 1.0 else 0.0
    return 1.0
