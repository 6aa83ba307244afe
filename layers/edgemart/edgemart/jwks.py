"""The signing keys of a JWKS URL (RS256/ES256), fetched again on a bounded schedule, so a
key removed from the set stops being accepted within `JWT_JWKS_MAX_AGE_S`
(docs/decisions/0003-tokens.md). PyJWT and urllib are imported on first use."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING

from edgemart.logging import logger

if TYPE_CHECKING:
    import jwt

JWKS_ALGORITHMS = ("RS256", "ES256")
UNKNOWN_KEY = "The token's signing key is not known"
KEYS_UNAVAILABLE = "The signing keys are not available; try again later"


class JwksKeyError(Exception):
    """No usable key for a token; its message is the 401's detail."""


# A key set's freshness: Cache-Control max-age, clamped to [JWKS_MIN_AGE_S, JWT_JWKS_MAX_AGE_S].
JWKS_MIN_AGE_S = 30.0
JWKS_FETCH_TIMEOUT_S = 5.0
JWKS_MAX_BYTES = 1 << 20
_MAX_AGE_VALUE = re.compile(r'"?([0-9]{1,10})"?')


def jwks_fresh_for(cache_control: str | None, max_age_s: float) -> float:
    """How long a fetched key set stays fresh: the response's Cache-Control `max-age`
    (`no-cache` / `no-store` count as 0) clamped to [JWKS_MIN_AGE_S, max_age_s]; max_age_s
    when the response says nothing."""
    said: float | None = None
    for directive in (cache_control or "").split(","):
        name, _, value = directive.partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            seconds: float | None = 0.0
        elif name == "max-age" and (match := _MAX_AGE_VALUE.fullmatch(value.strip())):
            seconds = float(match.group(1))
        else:
            seconds = None
        if seconds is not None:
            said = seconds if said is None else min(said, seconds)
    if said is None:
        return max_age_s
    return min(max_age_s, max(JWKS_MIN_AGE_S, said))


class JwksDocumentError(ValueError):
    """The JWKS endpoint answered something that is not a key set."""


def signing_keys(document: bytes) -> dict[str, jwt.PyJWK]:
    """The RS256/ES256 public signing keys of a JWKS document, by `kid`. Entries that are not
    such a key (encryption keys, other algorithms, private keys, unparsable) are skipped; an
    empty `keys` array is a valid answer (every key revoked)."""
    import jwt

    try:
        parsed = json.loads(document)
    except ValueError:
        raise JwksDocumentError("not JSON") from None
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        raise JwksDocumentError("no keys array")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not _is_public_signing_entry(entry):
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in JWKS_ALGORITHMS:
            keys[entry["kid"]] = key
    return keys


def _is_public_signing_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("kid"), str)
        and entry.get("use", "sig") == "sig"
        and entry.get("alg") in (None, *JWKS_ALGORITHMS)
        and "d" not in entry
    )


def _fetch_jwks(url: str) -> tuple[bytes, str | None]:
    """The JWKS document and its Cache-Control header. Blocking: run in a thread."""
    import urllib.request

    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=JWKS_FETCH_TIMEOUT_S) as response:
        document: bytes = response.read(JWKS_MAX_BYTES + 1)
        cache_control: str | None = response.headers.get("Cache-Control")
    if len(document) > JWKS_MAX_BYTES:
        raise JwksDocumentError("larger than JWKS_MAX_BYTES")
    return document, cache_control


# urllib's errors (HTTPError, URLError, timeouts) are OSErrors; a garbled status line is not.
JWKS_FETCH_ERRORS = (OSError, http.client.HTTPException, JwksDocumentError)


@dataclass(eq=False, repr=False)
class JwksKeySet:
    """The signing keys from a JWKS URL, fetched again on a bounded schedule.

    A fetched set is fresh for `jwks_fresh_for(...)`; a stale set is fetched again before the
    next verification, and a key missing from the new set is refused at once. An unknown
    `kid` fetches early. Fetches, failed or not, are at least `min_interval_s` apart, so
    neither random `kid`s nor a failing endpoint make us hammer it. A failed fetch keeps the
    old keys for a grace of `max_age_s` past staleness; after that every token signed with a
    JWKS key is refused until a fetch succeeds.
    """

    url: str
    _: KW_ONLY
    max_age_s: float
    min_interval_s: float
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, init=False)
    _stale_at: float = field(default=float("-inf"), init=False)
    _usable_until: float = field(default=float("-inf"), init=False)
    _attempted_at: float = field(default=float("-inf"), init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)

    def key(self, kid: str, algorithm: str) -> jwt.PyJWK:
        """The key for `kid` and `algorithm` at hand (no I/O), or JwksKeyError."""
        if self.clock() >= self._usable_until:
            raise JwksKeyError(KEYS_UNAVAILABLE)
        jwk = self._keys.get(kid)
        if jwk is None or jwk.algorithm_name != algorithm:
            raise JwksKeyError(UNKNOWN_KEY)
        return jwk

    async def refresh(self, kid: str) -> None:
        """Fetch the set again if it is stale or lacks `kid` (and the last attempt is not too
        recent). A failure is logged and leaves the keys as they were."""
        if not self._due(kid):
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._due(kid):
                return  # another request fetched while this one waited
            attempted_at = self._attempted_at = self.clock()
            try:
                document, cache_control = await asyncio.to_thread(_fetch_jwks, self.url)
                keys = signing_keys(document)
            except JWKS_FETCH_ERRORS as exc:
                logger.warning(
                    "JWKS fetch failed (%s: %s); the previous keys stay usable for %.0f s",
                    type(exc).__name__,
                    exc,
                    max(0.0, self._usable_until - attempted_at),
                )
                return
            self._keys = keys
            self._stale_at = attempted_at + jwks_fresh_for(cache_control, self.max_age_s)
            self._usable_until = self._stale_at + self.max_age_s

    def _due(self, kid: str) -> bool:
        now = self.clock()
        if now - self._attempted_at < self.min_interval_s:
            return False
        return now >= self._stale_at or kid not in self._keys
