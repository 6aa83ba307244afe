"""JWT verification: HS256 secret, RS256/ES256 from a JWKS the test serves, every 401 case."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgemart.auth import Authenticator, UnauthorizedError, bearer_token, roles_from_claims
from tests.conftest import serve_in_thread

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
    def __init__(self) -> None:
        self.keys = [public_jwk(RSA_KEY, "rsa-1", "RS256"), public_jwk(EC_KEY, "ec-1", "ES256")]
        self.fetches = 0

    async def jwks(self, request: Request) -> JSONResponse:
        self.fetches += 1
        return JSONResponse({"keys": self.keys})


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[JwksServer, str]]:
    server = JwksServer()
    app = Starlette(routes=[Route("/.well-known/jwks.json", server.jwks)])
    with serve_in_thread(app) as url:
        yield server, f"{url}/.well-known/jwks.json"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, **extra}


def authenticator(jwks_url: str | None = None, **options: Any) -> Authenticator:
    return Authenticator(secret=SECRET, jwks_url=jwks_url, jwks_refresh_s=0, **options)


async def test_hs256_token(jwks: tuple[JwksServer, str]) -> None:
    token = jwt.encode(claims(roles=["admin", "seller"]), SECRET, algorithm="HS256")
    principal = await authenticator().verify(token)
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
    await auth.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}))
    server.keys.append(public_jwk(ROTATED_KEY, "rsa-2", "RS256"))
    fetches = server.fetches
    rotated = jwt.encode(claims(), ROTATED_KEY, algorithm="RS256", headers={"kid": "rsa-2"})
    assert (await auth.verify(rotated)).sub == "alice"
    assert server.fetches == fetches + 1
    with pytest.raises(UnauthorizedError, match="Unknown signing key"):
        await auth.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"}))


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
    ("make_token", "auth_options"),
    [
        (lambda: jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256"), {}),
        (
            lambda: jwt.encode(
                claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"
            ),
            {},
        ),
        (lambda: _unsigned(claims()), {}),
        (lambda: _forge_hs256_with(PUBLIC_PEM, claims()), {"secret": None}),
        (
            lambda: jwt.encode(
                {k: v for k, v in claims().items() if k != "sub"}, SECRET, algorithm="HS256"
            ),
            {},
        ),
        (
            lambda: jwt.encode(claims(iss="https://evil"), SECRET, algorithm="HS256"),
            {"issuer": "https://good"},
        ),
        (
            lambda: jwt.encode(claims(aud="other"), SECRET, algorithm="HS256"),
            {"audience": "edgemart"},
        ),
        (lambda: jwt.encode(claims(), SECRET * 2, algorithm="HS512"), {"secret": SECRET * 2}),
        (lambda: "not.a.token", {}),
        (
            lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}),
            {"jwks_url": None},
        ),
    ],
    ids=[
        "expired",
        "wrong-signature",
        "alg-none",
        "hs-rs-confusion",
        "no-sub",
        "wrong-issuer",
        "wrong-audience",
        "alg-not-allowed",
        "malformed",
        "rs256-without-jwks",
    ],
)
async def test_401_cases(
    jwks: tuple[JwksServer, str], make_token: Any, auth_options: dict[str, Any]
) -> None:
    options = {"secret": SECRET, "jwks_url": jwks[1], "jwks_refresh_s": 0, **auth_options}
    with pytest.raises(UnauthorizedError):
        await Authenticator(**options).verify(make_token())


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "bearer"])
def test_bad_authorization_headers(header: str | None) -> None:
    with pytest.raises(UnauthorizedError):
        bearer_token(header)


def test_roles_from_each_claim_style() -> None:
    assert roles_from_claims({"roles": ["admin"]}) == {"admin"}
    assert roles_from_claims({"cognito:groups": ["admin", "ops"]}) == {"admin", "ops"}
    assert roles_from_claims({"app_metadata": {"role": "admin"}}) == {"admin"}
    assert roles_from_claims({"roles": "admin"}) == frozenset()
