"""The token rules that need no server: subject and time claims, the tenant a token names
and who administers the platform."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from edgemart.auth import (
    EXPIRED,
    INVALID_TIME,
    LATEST_NUMERIC_DATE,
    LIFETIME_TOO_LONG,
    NO_EXPIRY,
    NO_SUBJECT,
    NOT_YET_VALID,
    SUBJECT_NOT_CLEAN,
    SUBJECT_TOO_LONG,
    ForbiddenError,
    Principal,
    org_id_from_claims,
    require_platform_admin,
    subject_problem,
    time_claims_problem,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("sub", "problem"),
    [
        (None, NO_SUBJECT),
        ("", NO_SUBJECT),
        (42, NO_SUBJECT),
        (["alice"], NO_SUBJECT),
        ("a" * 256, SUBJECT_TOO_LONG),
        ("a" * 10_000, SUBJECT_TOO_LONG),
        ("ali\x00ce", SUBJECT_NOT_CLEAN),
        ("\ud800", SUBJECT_NOT_CLEAN),
        ("alice\udfff", SUBJECT_NOT_CLEAN),
        ("bob\x1fquery", SUBJECT_NOT_CLEAN),
        ("tab\there", SUBJECT_NOT_CLEAN),
        ("del\x7f", SUBJECT_NOT_CLEAN),
        ("c1\x85", SUBJECT_NOT_CLEAN),
        ("c1\x9f", SUBJECT_NOT_CLEAN),
    ],
)
def test_subject_refused(sub: object, problem: str) -> None:
    assert subject_problem(sub) == problem


@pytest.mark.parametrize(
    "sub", ["alice", "a" * 255, "auth0|5f7c8ec7c33c6c004bbafe82", "üser 名前", "\U0001f600" * 255]
)
def test_subject_accepted(sub: str) -> None:
    assert subject_problem(sub) is None


def problem(claims: dict[str, Any], leeway_s: float = 0.0, lifetime: float | None = None) -> Any:
    return time_claims_problem(claims, now=NOW, leeway_s=leeway_s, max_lifetime_s=lifetime)


@pytest.mark.parametrize(
    "exp",
    [
        "9999999999",
        "1700000600",
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        2**63,
        1e300,
        LATEST_NUMERIC_DATE + 1,
        [NOW + 600],
        {"t": NOW + 600},
    ],
)
def test_exp_must_be_a_numeric_date(exp: object) -> None:
    assert problem({"exp": exp}) == INVALID_TIME.format(claim="exp")


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("value", ["1700000000", True, None, float("nan"), 2**63])
def test_nbf_and_iat_must_be_numeric_dates(claim: str, value: object) -> None:
    assert problem({"exp": NOW + 600, claim: value}) == INVALID_TIME.format(claim=claim)


def test_exp_is_required() -> None:
    assert problem({"iat": NOW}) == NO_EXPIRY


@pytest.mark.parametrize(
    ("claims", "leeway_s", "expected"),
    [
        ({"exp": NOW + 600, "iat": NOW, "nbf": NOW}, 0, None),
        ({"exp": NOW + 0.5}, 0, None),
        ({"exp": NOW}, 0, EXPIRED),
        ({"exp": NOW - 20}, 0, EXPIRED),
        ({"exp": NOW - 20}, 30, None),
        ({"exp": NOW - 31}, 30, EXPIRED),
        ({"exp": NOW + 600, "nbf": NOW + 10}, 0, NOT_YET_VALID),
        ({"exp": NOW + 600, "nbf": NOW + 10}, 30, None),
        ({"exp": NOW + 600, "iat": NOW + 10}, 0, NOT_YET_VALID),
        ({"exp": NOW + 600, "iat": NOW + 10}, 30, None),
    ],
)
def test_expiry_and_leeway(claims: dict[str, Any], leeway_s: float, expected: str | None) -> None:
    assert problem(claims, leeway_s) == expected


@pytest.mark.parametrize(
    ("exp", "leeway_s", "expected"),
    [
        (NOW + 3600, 0, None),
        (NOW + 3601, 0, LIFETIME_TOO_LONG),
        (NOW + 3620, 30, None),
        (NOW + 3631, 30, LIFETIME_TOO_LONG),
        (LATEST_NUMERIC_DATE, 0, LIFETIME_TOO_LONG),
    ],
)
def test_max_lifetime(exp: float, leeway_s: float, expected: str | None) -> None:
    assert problem({"exp": exp}, leeway_s, lifetime=3600) == expected


def test_no_lifetime_cap_unless_configured() -> None:
    assert problem({"exp": LATEST_NUMERIC_DATE}) is None


def test_importing_auth_loads_neither_pyjwt_nor_urllib() -> None:
    probe = (
        "import sys, edgemart.auth; "
        "print([m for m in ('jwt', 'cryptography', 'urllib.request') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("claims", "org_id"),
    [
        ({}, None),
        ({"org_id": "acme"}, "acme"),
        ({"app_metadata": {"org_id": "acme", "role": "admin"}}, "acme"),
        ({"org_id": "first", "app_metadata": {"org_id": "second"}}, "first"),
        ({"org_id": ""}, ""),  # present, if empty: a tenant's token all the same
        ({"org_id": 7}, "7"),
        ({"app_metadata": "acme"}, None),
    ],
)
def test_the_tenant_a_token_names(claims: dict[str, Any], org_id: str | None) -> None:
    assert org_id_from_claims(claims) == org_id


@pytest.mark.parametrize(
    "principal",
    [
        Principal("ops", frozenset({"admin"})),
        Principal("ops", frozenset({"platform_admin"}), org_id="acme"),
        Principal("ops", frozenset({"platform_admin"}), org_id=""),
    ],
)
def test_a_platform_admin_holds_the_role_on_a_token_of_no_tenant(principal: Principal) -> None:
    with pytest.raises(ForbiddenError):
        require_platform_admin(principal)
    require_platform_admin(Principal("ops", frozenset({"platform_admin", "admin"})))
