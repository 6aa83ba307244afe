"""Tokens this process has verified, remembered so a client's next request with the same token
skips PyJWT.

A client sends the same bearer token with every request until it expires. Verifying it again
each time (base64, JSON, the HMAC or RSA check, PyJWT's claim handling) costs a quarter of a
purchase's CPU in the gateway (bench/capacity/PROFILE.md). What may change between two
requests with the same token is checked again on every use: the time claims (the token may
have expired since) and, for a JWKS key, that the key set still holds the very key that
verified it (a rotation that drops the key drops the token). What cannot change is not: the
signature, issuer, audience and subject of the same string. Only tokens that verified are
remembered, and at most `max_entries` of them, oldest first out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgemart.auth import Principal

TIME_CLAIMS = ("exp", "nbf", "iat")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    principal: Principal
    time_claims: Mapping[str, Any]
    """The token's `exp`, `nbf` and `iat` as it carried them, checked again at each use."""
    jwks_key: tuple[str, str, object] | None = None
    """The JWKS key that verified it, as (kid, algorithm, the key set's object for them): the
    token holds while the key set still has that very object. None for the shared secret."""

    @classmethod
    def of(
        cls,
        principal: Principal,
        claims: Mapping[str, Any],
        *,
        jwks_key: tuple[str, str, object] | None = None,
    ) -> VerifiedToken:
        times = {claim: claims[claim] for claim in TIME_CLAIMS if claim in claims}
        return cls(principal, times, jwks_key)


class VerifiedTokens:
    """A bounded map of token → `VerifiedToken`, first in first out."""

    __slots__ = ("max_entries", "_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, VerifiedToken] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> VerifiedToken | None:
        return self._entries.get(token)

    def remember(self, token: str, verified: VerifiedToken) -> None:
        if self.max_entries <= 0:
            return
        entries = self._entries
        if token not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[token] = verified

    def forget(self, token: str) -> None:
        self._entries.pop(token, None)
