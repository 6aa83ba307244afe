"""The bounded memory of verified tokens."""

from __future__ import annotations

from edgemart.auth import Principal
from edgemart.tokencache import VerifiedToken, VerifiedTokens


def verified(sub: str) -> VerifiedToken:
    return VerifiedToken.of(Principal(sub), {"sub": sub, "exp": 2_000_000_000, "role": "x"})


def test_only_the_time_claims_are_kept() -> None:
    assert dict(verified("alice").time_claims) == {"exp": 2_000_000_000}


def test_the_oldest_token_leaves_first_when_full() -> None:
    tokens = VerifiedTokens(max_entries=2)
    for name in ("a", "b", "c"):
        tokens.remember(name, verified(name))
    assert tokens.get("a") is None and len(tokens) == 2
    tokens.remember("b", verified("b2"))  # known: replaced, nothing leaves
    assert len(tokens) == 2 and tokens.get("c") is not None
    assert tokens.get("b") == verified("b2")


def test_forget_and_a_memory_of_zero() -> None:
    tokens = VerifiedTokens(max_entries=1)
    tokens.remember("a", verified("a"))
    tokens.forget("a")
    tokens.forget("never-seen")
    assert len(tokens) == 0
    off = VerifiedTokens(max_entries=0)
    off.remember("a", verified("a"))
    assert off.get("a") is None
