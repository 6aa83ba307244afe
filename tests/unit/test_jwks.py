"""The JWKS key set's pure parts: freshness from Cache-Control, which entries are keys."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edgemart.jwks import JwksDocumentError, jwks_fresh_for, signing_keys


@pytest.mark.parametrize(
    ("cache_control", "max_age_s", "fresh_for"),
    [
        (None, 300, 300),
        ("", 300, 300),
        ("max-age=60", 300, 60),
        ("public, max-age=60, must-revalidate", 300, 60),
        ("Max-Age=120", 300, 120),
        ('max-age="90"', 300, 90),
        ("max-age=5", 300, 30),
        ("max-age=0", 300, 30),
        ("max-age=86400", 300, 300),
        ("no-cache", 300, 30),
        ("no-store, max-age=600", 300, 30),
        ("max-age=abc", 300, 300),
        ("max-age=-5", 300, 300),
        ("s-maxage=10", 300, 300),
        ("max-age=60", 10, 10),
    ],
)
def test_jwks_freshness_honours_and_clamps_max_age(
    cache_control: str | None, max_age_s: float, fresh_for: float
) -> None:
    assert jwks_fresh_for(cache_control, max_age_s) == fresh_for


def public(key: Any, **fields: Any) -> dict[str, Any]:
    algorithm: Any = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else jwt.algorithms.OKPAlgorithm
    )
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, **fields}


def test_signing_keys_keeps_only_public_rs256_es256_signing_keys() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))
    document = {
        "keys": [
            public(rsa_key, kid="rsa", alg="RS256", use="sig"),
            public(ec_key, kid="ec"),  # no alg, no use: inferred ES256 signing key
            public(rsa_key, kid="enc", use="enc"),
            public(rsa_key, alg="RS256"),  # no kid
            public(ec_key, kid="ec-as-rsa", alg="RS256"),
            public(ec.generate_private_key(ec.SECP384R1()), kid="es384"),
            public(ed25519.Ed25519PrivateKey.generate(), kid="eddsa"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**private_jwk, "kid": "private"},
            {"kid": "none", "alg": "none", "kty": "RSA"},
            {"kid": "garbage", "kty": "RSA", "n": 5, "e": "AQAB"},
            "not a key",
        ]
    }
    keys = signing_keys(json.dumps(document).encode())
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {
        "rsa": "RS256",
        "ec": "ES256",
    }


def test_an_empty_key_set_is_an_answer() -> None:
    assert signing_keys(b'{"keys": []}') == {}


@pytest.mark.parametrize(
    "document", [b"", b"<html>", b"[]", b'{"keys": {}}', b'{"key": []}', b"\xff"]
)
def test_a_document_that_is_no_key_set_is_an_error(document: bytes) -> None:
    with pytest.raises(JwksDocumentError):
        signing_keys(document)
