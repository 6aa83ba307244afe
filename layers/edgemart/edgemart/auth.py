"""Bearer JWT verification with PyJWT; roles from claims, no database hit.

HS256 with `JWT_SECRET` (development) and RS256/ES256 with keys from `JWT_JWKS_URL`
(production: Cognito, Supabase Auth). The algorithm decides the key: an HS256 token is only
ever checked against the shared secret and an RS256/ES256 token only against a JWKS key of
that algorithm, so `alg: none` and HS/RS confusion (an HS256 token "signed" with the public
key) are rejected. `JWT_ISSUER` / `JWT_AUDIENCE` are enforced when set.

PyJWT checks the signature, issuer and audience; the time claims and the subject are checked
here (`time_claims_problem`, `subject_problem`), because PyJWT coerces `exp` with `int()` and
so accepts `"9999999999"`, `true` or `1e300`. Every failure is a 401 whose detail is one of
the sentences below, never a library's message.

JWKS keys come from `edgemart.jwks.JwksKeySet`, which fetches them again on a bounded
schedule.

**Tenants** (decision 0041). A token's tenant is its `org_id` claim (else Supabase's
`app_metadata.org_id`): the tenant's id or slug. In multi mode `authenticate` refuses, with 403
`tenant_mismatch`, a token that names another tenant than the request's (its host's), or none;
roles then apply within that tenant. A token with role `platform_admin` and no `org_id`
administers the platform and no marketplace: only `/platform/*` accepts it
(`authenticate_platform_admin`). Single mode ignores `org_id`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from edgemart.errors import ProblemError, TenantMismatchError
from edgemart.jwks import JWKS_ALGORITHMS, JwksKeyError, JwksKeySet
from edgemart.tenancy import Tenant, tenant_of
from edgemart.tokencache import VerifiedToken, VerifiedTokens
from edgemart.validation import is_clean_identifier

if TYPE_CHECKING:
    import jwt
    from starlette.requests import Request
    from starlette.types import Scope

    from edgemart.settings import Settings

HMAC_ALGORITHMS = ("HS256",)
ADMIN_ROLE = "admin"
PLATFORM_ADMIN_ROLE = "platform_admin"
"""Administers the tenants themselves (`/platform/*`), with a token that names no tenant."""
PRINCIPAL_STATE_KEY = "principal"

MAX_SUBJECT_LENGTH = 255  # the database's CHECK on every *_sub column
# 9999-12-31T23:59:59Z: a NumericDate beyond it is not a date any issuer means.
LATEST_NUMERIC_DATE = 253_402_300_799

MALFORMED = "The token is malformed"
ALGORITHM_NOT_ACCEPTED = "The token's algorithm is not accepted"
BAD_SIGNATURE = "The token's signature is not valid"
ISSUER_NOT_ACCEPTED = "The token's issuer is not accepted"
AUDIENCE_NOT_ACCEPTED = "The token's audience is not accepted"
NO_EXPIRY = "The token has no expiry time"
INVALID_TIME = "The token's {claim} claim is not a valid time"
EXPIRED = "The token has expired"
NOT_YET_VALID = "The token is not valid yet"
LIFETIME_TOO_LONG = "The token's expiry time lies too far in the future"
NO_SUBJECT = "The token has no subject"
SUBJECT_TOO_LONG = f"The token's subject is longer than {MAX_SUBJECT_LENGTH} characters"
SUBJECT_NOT_CLEAN = "The token's subject contains characters that are not allowed"


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
    org_id: str | None = None
    """The tenant the token is for (its id or slug), or None."""

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def belongs_to(self, tenant: Tenant) -> bool:
        """Whether the token names `tenant`, by slug or by id (in any spelling of it)."""
        org_id = self.org_id
        if org_id is None:
            return False
        if org_id == tenant.slug or org_id == str(tenant.id):
            return True
        try:
            return UUID(org_id) == tenant.id
        except ValueError:
            return False


def roles_from_claims(claims: Mapping[str, Any]) -> frozenset[str]:
    """`roles` (array), else Cognito's `cognito:groups`, else Supabase's `app_metadata.role`."""
    for candidate in (claims.get("roles"), claims.get("cognito:groups")):
        if isinstance(candidate, list):
            return frozenset(str(role) for role in candidate if isinstance(role, str))
    metadata = claims.get("app_metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("role"), str):
        return frozenset({metadata["role"]})
    return frozenset()


def org_id_from_claims(claims: Mapping[str, Any]) -> str | None:
    """`org_id`, else Supabase's `app_metadata.org_id`; any other type counts as present (a
    token that names a tenant oddly still names one), as text."""
    metadata = claims.get("app_metadata")
    for source in (claims, metadata if isinstance(metadata, Mapping) else {}):
        value = source.get("org_id")
        if value is not None:
            return value if isinstance(value, str) else str(value)
    return None


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthorizedError("Missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Expected 'Authorization: Bearer <token>'")
    return token.strip()


def subject_problem(sub: object) -> str | None:
    """Why `sub` cannot name a user, or None. It becomes a database key and part of Redis
    keys (joined with U+001F), so it is held to the identifier rule."""
    if not isinstance(sub, str) or not sub:
        return NO_SUBJECT
    if len(sub) > MAX_SUBJECT_LENGTH:
        return SUBJECT_TOO_LONG
    if not is_clean_identifier(sub):
        return SUBJECT_NOT_CLEAN
    return None


def _numeric_date(value: object) -> float | None:
    """A JSON number between the epoch and year 9999 (RFC 7519 NumericDate), else None: no
    strings, booleans, null, NaN or infinities (NaN fails both comparisons)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= LATEST_NUMERIC_DATE:
        return None
    return float(value)


def time_claims_problem(
    claims: Mapping[str, Any], *, now: float, leeway_s: float, max_lifetime_s: float | None
) -> str | None:
    """Why `exp` / `nbf` / `iat` make the token unacceptable at `now`, or None. `exp` is
    required; `max_lifetime_s` caps how far ahead of `now` it may lie (plus the leeway, the
    issuer's clock may run ahead of ours)."""
    if "exp" not in claims:
        return NO_EXPIRY
    dates: dict[str, float] = {}
    for claim in ("exp", "nbf", "iat"):
        if claim in claims:
            value = _numeric_date(claims[claim])
            if value is None:
                return INVALID_TIME.format(claim=claim)
            dates[claim] = value
    if dates["exp"] <= now - leeway_s:
        return EXPIRED
    if max(dates.get("nbf", 0.0), dates.get("iat", 0.0)) > now + leeway_s:
        return NOT_YET_VALID
    if max_lifetime_s is not None and dates["exp"] > now + max_lifetime_s + leeway_s:
        return LIFETIME_TOO_LONG
    return None


class Authenticator:
    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 0.0,
        max_lifetime_s: float | None = None,
        jwks_max_age_s: float = 300.0,
        jwks_refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        remember_tokens: int = 4096,
    ) -> None:
        """`clock` paces JWKS fetches; `wall_clock` is what the time claims are checked
        against; `remember_tokens` bounds the tokens verified before (edgemart.tokencache)."""
        self.secret = secret
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s
        self.jwks = (
            JwksKeySet(
                jwks_url, max_age_s=jwks_max_age_s, min_interval_s=jwks_refresh_s, clock=clock
            )
            if jwks_url
            else None
        )
        self.wall_clock = wall_clock
        self.verified = VerifiedTokens(remember_tokens)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> Authenticator:
        return cls(
            secret=settings.jwt_secret,
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
            max_lifetime_s=settings.jwt_max_token_lifetime_s,
            jwks_max_age_s=settings.jwt_jwks_max_age_s,
            clock=clock,
        )

    # PyJWT (and cryptography behind it) is imported on first use, not at cold start of
    # functions that never see a token.
    async def verify(self, token: str) -> Principal:
        """Verify a token, fetching the JWKS first if it is stale or lacks the token's `kid`."""
        remembered = self.verified.get(token)
        kid = remembered.jwks_key[0] if remembered and remembered.jwks_key else None
        if remembered is None:
            header = _header(token)
            if header.get("alg") in JWKS_ALGORITHMS:
                kid = _kid(header)
        if kid is not None and self.jwks is not None:
            await self.jwks.refresh(kid)
        return self.verify_cached(token)

    def verify_cached(self, token: str) -> Principal:
        """Verify with the keys already at hand (no I/O)."""
        remembered = self.verified.get(token)
        if remembered is not None and self._still_keyed(remembered):
            self._check_claims(remembered.time_claims, remembered.principal.sub, token)
            return remembered.principal
        import jwt

        header = _header(token)
        algorithm = header.get("alg")
        key: Any
        jwks_key: tuple[str, str, object] | None = None
        if algorithm in HMAC_ALGORITHMS and self.secret:
            key = self.secret
        elif algorithm in JWKS_ALGORITHMS and self.jwks is not None:
            kid = _kid(header)
            try:
                jwk = self.jwks.key(kid, algorithm)
            except JwksKeyError as exc:
                raise UnauthorizedError(str(exc)) from None
            key, jwks_key = jwk.key, (kid, algorithm, jwk)
        else:
            raise UnauthorizedError(ALGORITHM_NOT_ACCEPTED)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "verify_aud": self.audience is not None,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_sub": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(_decode_failure(exc)) from None
        self._check_claims(claims, claims.get("sub"), token)
        principal = Principal(claims["sub"], roles_from_claims(claims), org_id_from_claims(claims))
        self.verified.remember(token, VerifiedToken.of(principal, claims, jwks_key=jwks_key))
        return principal

    def _still_keyed(self, remembered: VerifiedToken) -> bool:
        """Whether the key that verified a remembered token still verifies it: always for the
        shared secret; for a JWKS key, while the key set still holds that very key."""
        if remembered.jwks_key is None:
            return True
        if self.jwks is None:
            return False
        kid, algorithm, jwk = remembered.jwks_key
        try:
            return self.jwks.key(kid, algorithm) is jwk
        except JwksKeyError:
            return False

    def _check_claims(self, claims: Mapping[str, Any], sub: object, token: str) -> None:
        problem = time_claims_problem(
            claims,
            now=self.wall_clock(),
            leeway_s=self.leeway_s,
            max_lifetime_s=self.max_lifetime_s,
        ) or subject_problem(sub)
        if problem is not None:
            self.verified.forget(token)
            raise UnauthorizedError(problem)


def _header(token: str) -> dict[str, Any]:
    import jwt

    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise UnauthorizedError(MALFORMED) from None


def _kid(header: Mapping[str, Any]) -> str:
    kid = header.get("kid")
    return kid if isinstance(kid, str) else ""


def _decode_failure(exc: jwt.PyJWTError) -> str:
    """The project's sentence for what PyJWT refused (its own message never reaches a client)."""
    import jwt

    if isinstance(exc, jwt.InvalidSignatureError):
        return BAD_SIGNATURE
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return ALGORITHM_NOT_ACCEPTED
    missing = exc.claim if isinstance(exc, jwt.MissingRequiredClaimError) else None
    if isinstance(exc, jwt.InvalidIssuerError) or missing == "iss":
        return ISSUER_NOT_ACCEPTED
    if isinstance(exc, jwt.InvalidAudienceError) or missing == "aud":
        return AUDIENCE_NOT_ACCEPTED
    return MALFORMED


async def verified_principal(request: Request) -> Principal:
    """The caller's verified principal, or 401; whichever tenant it names."""
    cached = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(cached, Principal):
        return cached
    authenticator: Authenticator = request.app.state.services.authenticator
    principal = await authenticator.verify(bearer_token(request.headers.get("authorization")))
    request.scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
    return principal


async def authenticate(request: Request) -> Principal:
    """The caller's verified principal (or 401), in multi mode of the request's tenant (or
    403 `tenant_mismatch`)."""
    principal = await verified_principal(request)
    if request.app.state.services.settings.tenancy == "multi":
        require_tenant(principal, tenant_of(request.scope))
    return principal


async def authenticate_platform_admin(request: Request) -> Principal:
    """The caller of a `/platform/*` route: verified (or 401), with role `platform_admin`
    and no `org_id` (or 403 `forbidden`), on any host and in either mode."""
    principal = await verified_principal(request)
    require_platform_admin(principal)
    return principal


def require_tenant(principal: Principal, tenant: Tenant) -> None:
    if not principal.belongs_to(tenant):
        raise TenantMismatchError()


def require_platform_admin(principal: Principal) -> None:
    """A platform administrator's token belongs to no tenant: one with an `org_id` is a
    tenant's token, whatever its roles."""
    if PLATFORM_ADMIN_ROLE not in principal.roles or principal.org_id is not None:
        raise ForbiddenError("Platform administration needs a platform_admin token without org_id")


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
