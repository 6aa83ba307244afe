"""JWT verification: HS256 secret, RS256/ES256 from a JWKS the test serves, every 401 case,
and the same rules through the gateway on real routes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgemart.auth import (
    ALGORITHM_NOT_ACCEPTED,
    AUDIENCE_NOT_ACCEPTED,
    BAD_SIGNATURE,
    EXPIRED,
    INVALID_TIME,
    ISSUER_NOT_ACCEPTED,
    LIFETIME_TOO_LONG,
    MALFORMED,
    NO_EXPIRY,
    NO_SUBJECT,
    NOT_YET_VALID,
    SUBJECT_NOT_CLEAN,
    SUBJECT_TOO_LONG,
    Authenticator,
    UnauthorizedError,
    bearer_token,
    roles_from_claims,
    subject_from_scope,
)
from edgemart.jwks import KEYS_UNAVAILABLE, UNKNOWN_KEY
from edgemart.services import Services
from edgemart.settings import RATE_LIMIT_GROUPS
from gateway.app import create_gateway
from tests.conftest import FakeClock, open_gateway, serve_in_thread, settings_for
from tests.support.tokens import REFUSED_CLAIMS

pytestmark = pytest.mark.anyio
SECRET = "auth-tests-secret-of-at-least-32-bytes!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ROTATED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


class JwksServer:
    """A JWKS endpoint whose keys, Cache-Control and failures a test sets."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.keys = [public_jwk(RSA_KEY, "rsa-1", "RS256"), public_jwk(EC_KEY, "ec-1", "ES256")]
        self.fetches = 0
        self.cache_control: str | None = None
        self.failure: str | None = None  # "status" (503) or "garbage" (200, not a key set)

    async def jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.failure == "status":
            return Response("unavailable", status_code=503)
        if self.failure == "garbage":
            return Response("<html>maintenance</html>", media_type="text/html")
        headers = {"Cache-Control": self.cache_control} if self.cache_control else None
        return JSONResponse({"keys": self.keys}, headers=headers)


@pytest.fixture(scope="module")
def jwks_endpoint() -> Iterator[tuple[JwksServer, str]]:
    server = JwksServer()
    app = Starlette(routes=[Route("/.well-known/jwks.json", server.jwks)])
    with serve_in_thread(app) as url:
        yield server, f"{url}/.well-known/jwks.json"


@pytest.fixture
def jwks(jwks_endpoint: tuple[JwksServer, str]) -> tuple[JwksServer, str]:
    jwks_endpoint[0].reset()
    return jwks_endpoint


def clocked(jwks_url: str, **options: Any) -> tuple[FakeClock, Authenticator]:
    """An authenticator of the key set at `jwks_url`, on a clock the test moves."""
    clock = FakeClock(1000.0)
    return clock, Authenticator(jwks_url=jwks_url, clock=clock, **options)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, **extra}


def hs256(**extra: Any) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def rs256(kid: str = "rsa-1", key: Any = RSA_KEY) -> str:
    return jwt.encode(claims(), key, algorithm="RS256", headers={"kid": kid})


def authenticator(jwks_url: str | None = None, **options: Any) -> Authenticator:
    return Authenticator(secret=SECRET, jwks_url=jwks_url, jwks_refresh_s=0, **options)


async def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(UnauthorizedError) as raised:
        await auth.verify(token)
    assert raised.value.status == 401 and raised.value.code == "unauthorized"
    return str(raised.value.detail)


async def test_hs256_token(jwks: tuple[JwksServer, str]) -> None:
    principal = await authenticator().verify(hs256(roles=["admin", "seller"]))
    assert principal.sub == "alice" and principal.is_admin


@pytest.mark.parametrize(
    ("key", "kid", "alg"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256")]
)
async def test_jwks_tokens(jwks: tuple[JwksServer, str], key: Any, kid: str, alg: str) -> None:
    token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
    assert (await authenticator(jwks[1]).verify(token)).sub == "alice"


async def test_unknown_kid_refreshes_the_key_set(jwks: tuple[JwksServer, str]) -> None:
    server, url = jwks
    auth = authenticator(url)
    await auth.verify(rs256())
    server.keys.append(public_jwk(ROTATED_KEY, "rsa-2", "RS256"))
    fetches = server.fetches
    assert (await auth.verify(rs256("rsa-2", ROTATED_KEY))).sub == "alice"
    assert server.fetches == fetches + 1
    assert await refused(auth, rs256("nope")) == UNKNOWN_KEY


async def test_unknown_kids_fetch_at_most_every_10_s(jwks: tuple[JwksServer, str]) -> None:
    server, url = jwks
    clock, auth = clocked(url)
    await auth.verify(rs256())
    for kid in ("random-1", "random-2", "random-3"):
        assert await refused(auth, rs256(kid)) == UNKNOWN_KEY
    assert server.fetches == 1
    clock.now += 10
    assert await refused(auth, rs256("random-4")) == UNKNOWN_KEY
    assert server.fetches == 2


async def test_a_key_removed_from_the_set_is_refused_once_the_set_is_stale(
    jwks: tuple[JwksServer, str],
) -> None:
    server, url = jwks
    clock, auth = clocked(url, jwks_max_age_s=300)
    assert (await auth.verify(rs256())).sub == "alice"
    server.keys = [public_jwk(ROTATED_KEY, "rsa-2", "RS256")]  # rsa-1 revoked
    clock.now += 299
    assert (await auth.verify(rs256())).sub == "alice"  # the set is still fresh
    assert server.fetches == 1
    clock.now += 1
    assert await refused(auth, rs256()) == UNKNOWN_KEY
    assert server.fetches == 2
    with pytest.raises(UnauthorizedError):
        auth.verify_cached(rs256())  # the rate limiter's path holds the new set too
    assert (await auth.verify(rs256("rsa-2", ROTATED_KEY))).sub == "alice"
    assert server.fetches == 2


@pytest.mark.parametrize(
    ("cache_control", "stale_after_s"),
    [
        (None, 300),
        ("public, max-age=60", 60),
        ("max-age=5", 30),
        ("no-cache", 30),
        ("max-age=86400", 300),
    ],
)
async def test_cache_control_max_age_is_honoured_and_clamped(
    jwks: tuple[JwksServer, str], cache_control: str | None, stale_after_s: float
) -> None:
    server, url = jwks
    server.cache_control = cache_control
    clock, auth = clocked(url, jwks_max_age_s=300)
    await auth.verify(rs256())
    clock.now += stale_after_s - 1
    await auth.verify(rs256())
    assert server.fetches == 1
    clock.now += 1
    await auth.verify(rs256())
    assert server.fetches == 2


async def test_concurrent_requests_on_a_stale_set_fetch_it_once(
    jwks: tuple[JwksServer, str],
) -> None:
    server, url = jwks
    clock, auth = clocked(url, jwks_max_age_s=300)
    await auth.verify(rs256())
    clock.now += 300
    principals = await asyncio.gather(*(auth.verify(rs256()) for _ in range(20)))
    assert {p.sub for p in principals} == {"alice"} and server.fetches == 2


@pytest.mark.parametrize("failure", ["status", "garbage"])
async def test_a_failed_refetch_keeps_the_keys_for_a_grace_period_then_refuses(
    jwks: tuple[JwksServer, str], failure: str
) -> None:
    server, url = jwks
    clock, auth = clocked(url, jwks_max_age_s=300)
    await auth.verify(rs256())
    server.failure = failure
    clock.now += 300  # stale: fetched again, which fails; the old keys still serve
    assert (await auth.verify(rs256())).sub == "alice"
    assert server.fetches == 2
    clock.now += 9
    await auth.verify(rs256())
    assert server.fetches == 2  # retried at most every 10 s
    clock.now += 1
    await auth.verify(rs256())
    assert server.fetches == 3
    clock.now = 1000 + 600  # grace (one max age past staleness) is over
    assert await refused(auth, rs256()) == KEYS_UNAVAILABLE
    server.failure = None
    clock.now += 10
    assert (await auth.verify(rs256())).sub == "alice"


async def test_no_key_set_ever_fetched_refuses(jwks: tuple[JwksServer, str]) -> None:
    server, url = jwks
    server.failure = "status"
    auth = Authenticator(jwks_url=url, clock=FakeClock(1000.0))
    assert await refused(auth, rs256()) == KEYS_UNAVAILABLE


async def test_an_empty_key_set_revokes_every_key(jwks: tuple[JwksServer, str]) -> None:
    server, url = jwks
    clock, auth = clocked(url)
    await auth.verify(rs256())
    server.keys = []
    clock.now += 300
    assert await refused(auth, rs256()) == UNKNOWN_KEY


def _forge_hs256_with(key_bytes: bytes, payload: dict[str, Any]) -> str:
    """An HS256 token 'signed' with the RSA public key: the classic confusion attack."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(key_bytes, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def _unsigned(payload: dict[str, Any]) -> str:
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}."


PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


@pytest.mark.parametrize(
    ("make_token", "auth_options", "detail"),
    [
        (lambda: hs256(exp=int(time.time()) - 3600), {}, EXPIRED),
        (
            lambda: jwt.encode(
                claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"
            ),
            {},
            BAD_SIGNATURE,
        ),
        (lambda: _unsigned(claims()), {}, ALGORITHM_NOT_ACCEPTED),
        (lambda: _forge_hs256_with(PUBLIC_PEM, claims()), {"secret": None}, ALGORITHM_NOT_ACCEPTED),
        (
            lambda: jwt.encode(
                {k: v for k, v in claims().items() if k != "sub"}, SECRET, algorithm="HS256"
            ),
            {},
            NO_SUBJECT,
        ),
        (lambda: hs256(iss="https://evil"), {"issuer": "https://good"}, ISSUER_NOT_ACCEPTED),
        (lambda: hs256(), {"issuer": "https://good"}, ISSUER_NOT_ACCEPTED),
        (lambda: hs256(aud="other"), {"audience": "edgemart"}, AUDIENCE_NOT_ACCEPTED),
        (lambda: hs256(), {"audience": "edgemart"}, AUDIENCE_NOT_ACCEPTED),
        (
            lambda: jwt.encode(claims(), SECRET * 2, algorithm="HS512"),
            {"secret": SECRET * 2},
            ALGORITHM_NOT_ACCEPTED,
        ),
        (lambda: "not.a.token", {}, MALFORMED),
        (lambda: hs256()[:-8] + "!!!!!!!!", {}, MALFORMED),
        (lambda: rs256(), {"jwks_url": None}, ALGORITHM_NOT_ACCEPTED),
        (lambda: hs256(exp="9999999999"), {}, INVALID_TIME.format(claim="exp")),
        (lambda: hs256(exp=True), {}, INVALID_TIME.format(claim="exp")),
        (lambda: hs256(exp=None), {}, INVALID_TIME.format(claim="exp")),
        (lambda: hs256(exp=float("nan")), {}, INVALID_TIME.format(claim="exp")),
        (lambda: hs256(exp=2**63), {}, INVALID_TIME.format(claim="exp")),
        (lambda: hs256(nbf="0"), {}, INVALID_TIME.format(claim="nbf")),
        (lambda: hs256(iat=[0]), {}, INVALID_TIME.format(claim="iat")),
        (lambda: hs256(nbf=int(time.time()) + 60), {}, NOT_YET_VALID),
        (
            lambda: jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
            {},
            NO_EXPIRY,
        ),
        (lambda: hs256(sub="a" * 10_000), {}, SUBJECT_TOO_LONG),
        (lambda: hs256(sub="ali\x00ce"), {}, SUBJECT_NOT_CLEAN),
        (lambda: hs256(sub="\ud800"), {}, SUBJECT_NOT_CLEAN),
        (lambda: hs256(sub="bob\x1fquery"), {}, SUBJECT_NOT_CLEAN),
        (lambda: hs256(sub=""), {}, NO_SUBJECT),
        (lambda: hs256(sub=42), {}, NO_SUBJECT),
    ],
    ids=[
        "expired",
        "wrong-signature",
        "alg-none",
        "hs-rs-confusion",
        "no-sub",
        "wrong-issuer",
        "no-issuer",
        "wrong-audience",
        "no-audience",
        "alg-not-allowed",
        "malformed",
        "bad-signature-encoding",
        "rs256-without-jwks",
        "exp-numeric-string",
        "exp-boolean",
        "exp-null",
        "exp-nan",
        "exp-2**63",
        "nbf-string",
        "iat-array",
        "nbf-in-the-future",
        "no-exp",
        "sub-10000-chars",
        "sub-nul",
        "sub-lone-surrogate",
        "sub-unit-separator",
        "sub-empty",
        "sub-number",
    ],
)
async def test_401_cases(
    jwks: tuple[JwksServer, str], make_token: Any, auth_options: dict[str, Any], detail: str
) -> None:
    options = {"secret": SECRET, "jwks_url": jwks[1], "jwks_refresh_s": 0, **auth_options}
    assert await refused(Authenticator(**options), make_token()) == detail


def expired_20_s_ago() -> str:
    return hs256(exp=int(time.time()) - 20)


async def test_leeway_defaults_to_none_and_comes_from_settings() -> None:
    assert await refused(Authenticator(secret=SECRET), expired_20_s_ago()) == EXPIRED
    default = Authenticator.from_settings(settings_for(None, jwt_secret=SECRET))
    assert await refused(default, expired_20_s_ago()) == EXPIRED
    lenient = Authenticator.from_settings(settings_for(None, jwt_secret=SECRET, jwt_leeway_s=30))
    assert (await lenient.verify(expired_20_s_ago())).sub == "alice"


async def test_max_token_lifetime_comes_from_settings() -> None:
    far = hs256(exp=int(time.time()) + 7200)
    uncapped = Authenticator.from_settings(settings_for(None, jwt_secret=SECRET))
    assert (await uncapped.verify(far)).sub == "alice"
    capped = Authenticator.from_settings(
        settings_for(None, jwt_secret=SECRET, jwt_max_token_lifetime_s=3600)
    )
    assert await refused(capped, far) == LIFETIME_TOO_LONG
    assert (await capped.verify(hs256(exp=int(time.time()) + 3000))).sub == "alice"


async def test_jwks_max_age_comes_from_settings(jwks: tuple[JwksServer, str]) -> None:
    server, url = jwks
    clock = FakeClock(1000.0)
    settings = settings_for(None, jwt_jwks_url=url, jwt_jwks_max_age_s=60)
    auth = Authenticator.from_settings(settings, clock=clock)
    await auth.verify(rs256())
    clock.now += 60
    await auth.verify(rs256())
    assert server.fetches == 2


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "bearer"])
def test_bad_authorization_headers(header: str | None) -> None:
    with pytest.raises(UnauthorizedError):
        bearer_token(header)


def test_roles_from_each_claim_style() -> None:
    assert roles_from_claims({"roles": ["admin"]}) == {"admin"}
    assert roles_from_claims({"cognito:groups": ["admin", "ops"]}) == {"admin", "ops"}
    assert roles_from_claims({"app_metadata": {"role": "admin"}}) == {"admin"}
    assert roles_from_claims({"roles": "admin"}) == frozenset()


# Through the gateway: the routes a sub reaches the database on, with every limit off.


def services_for(database_url: str, **settings: Any) -> Services:
    return Services.from_settings(
        settings_for(
            database_url,
            jwt_secret=SECRET,
            rate_limit_overrides=tuple((group, 0, 60) for group in RATE_LIMIT_GROUPS),
            **settings,
        )
    )


@pytest.fixture(scope="module")
async def gateway(module_database_url: str) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    services = services_for(module_database_url)
    async with open_gateway(services, peer=("203.0.113.9", 1)) as client:
        yield services, client


@pytest.fixture(scope="module")
async def capped_gateway(module_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    services = services_for(module_database_url, jwt_leeway_s=30, jwt_max_token_lifetime_s=3600)
    async with open_gateway(services, peer=("203.0.113.9", 1)) as client:
        yield client


async def call(client: httpx.AsyncClient, route: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if route == "wallet":
        return await client.get("/wallet", headers=headers)
    if route == "purchase":
        return await client.get(f"/purchases/{uuid.uuid4()}", headers=headers)
    slug = f"auth-{uuid.uuid4().hex[:12]}"
    return await client.post("/stores", json={"slug": slug, "name": "Auth"}, headers=headers)


def assert_unauthorized(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="edgemart"'
    body = response.json()
    assert (body["code"], body["detail"]) == ("unauthorized", detail)


ROUTES = ["wallet", "purchase", "store"]


@pytest.mark.parametrize("route", ROUTES)
async def test_clean_subject_passes(
    gateway: tuple[Services, httpx.AsyncClient], route: str
) -> None:
    response = await call(gateway[1], route, hs256(sub="carol"))
    assert response.status_code == {"wallet": 200, "purchase": 404, "store": 201}[route]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("payload", "detail"), REFUSED_CLAIMS)
async def test_bad_claims_are_401_on_every_route(
    gateway: tuple[Services, httpx.AsyncClient],
    module_database_url: str,
    route: str,
    payload: dict[str, Any],
    detail: str,
) -> None:
    response = await call(gateway[1], route, hs256(**payload))
    assert_unauthorized(response, detail)
    with psycopg.connect(module_database_url) as conn:
        owners = conn.execute("SELECT owner_sub FROM stores WHERE slug LIKE 'auth-%'").fetchall()
    assert all(owner == ("carol",) for owner in owners)


async def test_a_unit_separator_subject_cannot_record_another_users_search(
    gateway: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = gateway
    await services.search_history.drain()
    token = hs256(sub="carol\x1fmallory")
    response = await client.get(
        "/marketplace/search", params={"q": "chair"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_unauthorized(response, SUBJECT_NOT_CLEAN)
    assert await services.search_history.drain() == {}


async def test_the_rate_limiter_keys_an_unclean_subject_by_ip(
    gateway: tuple[Services, httpx.AsyncClient],
) -> None:
    services, _ = gateway
    app = create_gateway(services)

    def scope(token: str) -> dict[str, Any]:
        return {"headers": [(b"authorization", f"Bearer {token}".encode())], "app": app}

    assert subject_from_scope(scope(hs256(sub="carol"))) == "carol"
    for sub in ("carol\x1fmallory", "a" * 256, "ali\x00ce"):
        assert subject_from_scope(scope(hs256(sub=sub))) is None
    assert subject_from_scope(scope(hs256(exp="9999999999"))) is None


async def test_settings_reach_the_gateway(capped_gateway: httpx.AsyncClient) -> None:
    now = int(time.time())
    assert (await call(capped_gateway, "wallet", hs256(exp=now - 20))).status_code == 200
    assert_unauthorized(await call(capped_gateway, "wallet", hs256(exp=now - 40)), EXPIRED)
    assert_unauthorized(
        await call(capped_gateway, "wallet", hs256(exp=now + 7200)), LIFETIME_TOO_LONG
    )


# ---- Tokens verified before (edgemart.tokencache) ----


async def test_a_token_is_decoded_once_then_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    auth = authenticator()
    token = hs256(roles=["seller"])
    first = await auth.verify(token)
    assert await auth.verify(token) is first and auth.verify_cached(token) is first
    assert decoded == [token]


async def test_a_remembered_token_still_expires() -> None:
    now = [time.time()]
    auth = Authenticator(secret=SECRET, wall_clock=lambda: now[0])
    token = hs256(exp=int(now[0]) + 60)
    assert (await auth.verify(token)).sub == "alice"
    now[0] += 61
    assert await refused(auth, token) == EXPIRED
    assert auth.verified.get(token) is None  # forgotten, not checked again each time


async def test_a_refused_token_is_not_remembered() -> None:
    auth = authenticator()
    forged = _forge_hs256_with(b"not-the-secret", claims())
    assert await refused(auth, forged) == BAD_SIGNATURE
    assert len(auth.verified) == 0


async def test_a_remembered_jwks_token_needs_its_key_still_in_the_set(
    jwks: tuple[JwksServer, str],
) -> None:
    server, url = jwks
    clock, auth = clocked(url, jwks_max_age_s=300)
    token = rs256()
    assert (await auth.verify(token)).sub == "alice" and len(auth.verified) == 1
    remembered = auth.verified.get(token)
    server.keys = [public_jwk(RSA_KEY, "rsa-1", "RS256")]  # the same key, fetched again
    clock.now += 300
    assert (await auth.verify(token)).sub == "alice"
    assert auth.verified.get(token) is not remembered  # verified again against the new set
    server.keys = []
    clock.now += 300
    assert await refused(auth, token) == UNKNOWN_KEY
