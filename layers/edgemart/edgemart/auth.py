"""Bearer JWT verification with PyJWT; roles from claims, no database hit.

HS256 with `JWT_SECRET` (development) and RS256/ES256 with keys from `JWT_JWKS_URL`
(production: Cognito, Supabase Auth). The algorithm decides the key: an HS256 token is only
ever checked against the shared secret and an RS256/ES256 token only against a JWKS key of
that algorithm, so `alg: none` and HS/RS confusion (an HS256 token "signed" with the public
key) are rejected. `JWT_ISSUER` / `JWT_AUDIENCE` are enforced when set.

JWKS keys are cached by `kid`; an unknown `kid` refreshes the set (a key rotation), at most
once per `jwks_refresh_s`, so random `kid`s cannot make us hammer the JWKS endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgemart.errors import ProblemError

if TYPE_CHECKING:
    import jwt
    from starlette.requests import Request
    from starlette.types import Scope

    from edgemart.settings import Settings

HMAC_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")
ADMIN_ROLE = "admin"
PRINCIPAL_STATE_KEY = "principal"


class UnauthorizedError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            401,
            "unauthorized",
            "Unauthorized",
            detail,
            headers={"WWW-Authenticate": 'Bearer realm="edgemart"'},
        )


class ForbiddenError(ProblemError):
    def __init__(self, detail: str = "This action needs another role") -> None:
        super().__init__(403, "forbidden", "Forbidden", detail)


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def roles_from_claims(claims: Mapping[str, Any]) -> frozenset[str]:
    """`roles` (array), else Cognito's `cognito:groups`, else Supabase's `app_metadata.role`."""
    for candidate in (claims.get("roles"), claims.get("cognito:groups")):
        if isinstance(candidate, list):
            return frozenset(str(role) for role in candidate if isinstance(role, str))
    metadata = claims.get("app_metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("role"), str):
        return frozenset({metadata["role"]})
    return frozenset()


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthorizedError("Missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Expected 'Authorization: Bearer <token>'")
    return token.strip()


class Authenticator:
    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
        jwks_refresh_s: float = 10.0,
    ) -> None:
        self.secret = secret
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.jwks_refresh_s = jwks_refresh_s
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched_at = float("-inf")
        self._jwks_lock: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(
            secret=settings.jwt_secret,
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    # PyJWT (and cryptography behind it) is imported on first use, not at cold start of
    # functions that never see a token.
    async def verify(self, token: str) -> Principal:
        """Verify a token, fetching JWKS keys if its `kid` is new."""
        header = self._header(token)
        if header.get("alg") in JWKS_ALGORITHMS and self.jwks_url:
            kid = str(header.get("kid", ""))
            if kid not in self._jwks:
                await self._refresh_jwks()
        return self.verify_cached(token)

    def verify_cached(self, token: str) -> Principal:
        """Verify with the keys already at hand (no I/O)."""
        import jwt

        header = self._header(token)
        algorithm = header.get("alg")
        key: Any
        if algorithm in HMAC_ALGORITHMS and self.secret:
            key = self.secret
        elif algorithm in JWKS_ALGORITHMS and self.jwks_url:
            jwk = self._jwks.get(str(header.get("kid", "")))
            if jwk is None or jwk.algorithm_name != algorithm:
                raise UnauthorizedError("Unknown signing key")
            key = jwk.key
        else:
            raise UnauthorizedError("Token algorithm is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"Invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise UnauthorizedError("Token has no subject")
        return Principal(sub, roles_from_claims(claims))

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        import jwt

        try:
            return jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthorizedError("Malformed token") from None

    async def _refresh_jwks(self) -> None:
        if self._jwks_lock is None:
            self._jwks_lock = asyncio.Lock()
        async with self._jwks_lock:
            if time.monotonic() - self._jwks_fetched_at < self.jwks_refresh_s:
                return
            self._jwks_fetched_at = time.monotonic()
            import jwt

            try:
                keys = await asyncio.to_thread(_fetch_jwks, str(self.jwks_url))
            except (jwt.PyJWKClientError, OSError) as exc:
                raise UnauthorizedError(f"Signing keys unavailable: {exc}") from None
            self._jwks = keys


def _fetch_jwks(url: str) -> dict[str, jwt.PyJWK]:
    import jwt

    client = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=False, timeout=5)
    return {
        str(key.key_id): key
        for key in client.get_signing_keys()
        if key.key_id and key.algorithm_name in JWKS_ALGORITHMS
    }


async def authenticate(request: Request) -> Principal:
    """The caller's verified principal, or 401."""
    cached = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(cached, Principal):
        return cached
    authenticator: Authenticator = request.app.state.services.authenticator
    principal = await authenticator.verify(bearer_token(request.headers.get("authorization")))
    request.scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
    return principal


def require_role(principal: Principal, roles: Sequence[str]) -> None:
    if not principal.roles.intersection(roles):
        raise ForbiddenError()


def subject_from_scope(scope: Scope) -> str | None:
    """The rate limiter's key for user-keyed groups: the verified subject, with the keys at
    hand (no I/O). Anything unverifiable returns None, and the limiter keys by IP."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            try:
                token = bearer_token(value.decode("latin-1"))
                authenticator: Authenticator = scope["app"].state.services.authenticator
                principal = authenticator.verify_cached(token)
            except (UnauthorizedError, UnicodeDecodeError):
                return None
            scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
            return principal.sub
    return None
