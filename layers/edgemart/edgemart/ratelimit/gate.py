"""Rate limiting as a gate the request-context middleware runs before the app.

Limited routes get `RateLimit-Policy` and `RateLimit` headers on every response (syntax of
draft-ietf-httpapi-ratelimit-headers-09: `"search";q=60;w=60` and `"search";r=12;t=41`); a
request over the limit gets 429 `rate_limited` with `Retry-After`. The limiter is read from
the app's services on each request, so tests and the gateway can supply their own.

A gate rather than its own ASGI middleware: each middleware layer adds a frame to every
resumption of the request's coroutine chain and a `send` wrapper, which through uvicorn cost
a request more than the limiter's own work (bench/ratelimit/GATEWAY.md). The headers go into
`scope["state"]["response_headers"]`, which the request-context middleware's one `send`
wrapper appends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.responses import Response
from starlette.types import Scope

from edgemart.clientip import client_ip
from edgemart.errors import ProblemError
from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.policies import RateLimitTable
from edgemart.ratelimit.window import Decision, Policy
from edgemart.requestcontext import RESPONSE_HEADERS_KEY
from edgemart.settings import IPNetwork
from edgemart.tenancy import tenant_of
from edgemart.tenantscope import scoped

SubjectResolver = Callable[[Scope], str | None]


class _PolicyLabels:
    """A policy's header bytes and access-log outcomes, built once rather than per request."""

    __slots__ = ("policy_header", "admitted", "_state_format", "_outcomes")

    def __init__(self, policy: Policy) -> None:
        name = policy.name
        policy_value = f'"{name}";q={policy.limit};w={policy.window_s}'.encode()
        self.policy_header = (b"ratelimit-policy", policy_value)
        self._state_format = f'"{name.replace("%", "%%")}";r=%d;t=%d'.encode()
        self._outcomes = {
            (allowed, fallback): f"{name}:{'ok' if allowed else 'limited'}"
            + (":fallback" if fallback else "")
            for allowed in (True, False)
            for fallback in (True, False)
        }
        self.admitted = self._outcomes[(True, False)]  # the common outcome, read directly

    def outcome(self, allowed: bool, fallback: bool) -> str:
        return self._outcomes[(allowed, fallback)]

    def state_header(self, decision: Decision) -> tuple[bytes, bytes]:
        """Raw header bytes: this runs on every limited request, MutableHeaders is slower."""
        return (b"ratelimit", self._state_format % (decision.remaining, decision.reset_s))

    def headers(self, decision: Decision) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        return (self.policy_header, self.state_header(decision))


def rate_limited_error(policy: Policy, decision: Decision, labels: _PolicyLabels) -> ProblemError:
    headers = {name.decode(): value.decode() for name, value in labels.headers(decision)}
    headers["Retry-After"] = str(decision.retry_after_s)
    return ProblemError(
        429,
        "rate_limited",
        "Too many requests",
        f"Limit of {policy.limit} requests per {policy.window_s} s reached; "
        f"retry in {decision.retry_after_s} s",
        headers=headers,
    )


class RateLimitGate:
    """`gate(scope)`: None to let the request through (its headers queued), or the 429
    response to send instead; for a shared backend, an awaitable of either.

    The memory backend's check never waits, so its decision is returned directly: awaiting a
    coroutine per request would cost a measurable share of the check itself."""

    def __init__(
        self,
        *,
        table: RateLimitTable,
        trusted_proxies: Sequence[IPNetwork] = (),
        subject_of: SubjectResolver | None = None,
    ) -> None:
        self.table = table
        self.trusted_proxies = tuple(trusted_proxies)
        self.subject_of = subject_of
        self._labels: dict[str, _PolicyLabels] = {}

    def __call__(self, scope: Scope) -> Response | None | Awaitable[Response | None]:
        policy = self.table.policy_for(scope["method"], scope["path"])
        if policy is None:
            return None
        # Item access: `state.services` would first fail an ordinary attribute lookup (State
        # keeps its values in a dict behind __getattr__), which costs more than the check.
        limiter: RateLimiter = scope["app"].state["services"].rate_limiter
        identity = self.identity(scope, policy)
        if type(limiter) is MemoryRateLimiter:
            return self._apply(scope, policy, limiter.check_now(identity, policy))
        return self._check_shared(scope, policy, limiter, identity)

    async def _check_shared(
        self, scope: Scope, policy: Policy, limiter: RateLimiter, identity: str
    ) -> Response | None:
        return self._apply(scope, policy, await limiter.check(identity, policy))

    def _apply(self, scope: Scope, policy: Policy, decision: Decision) -> Response | None:
        labels = self._labels.get(policy.name) or self._remember_labels(policy)
        state = scope["state"]
        if decision.allowed and not decision.fallback:  # every request but a few
            state["rate_limit"] = labels.admitted
        else:
            state["rate_limit"] = labels.outcome(decision.allowed, decision.fallback)
            if not decision.allowed:
                return rate_limited_error(policy, decision, labels).to_response()
        state[RESPONSE_HEADERS_KEY] += (labels.policy_header, labels.state_header(decision))
        return None

    def _remember_labels(self, policy: Policy) -> _PolicyLabels:
        labels = _PolicyLabels(policy)
        self._labels[policy.name] = labels
        return labels

    def identity(self, scope: Scope, policy: Policy) -> str:
        """`user:<sub>` for user-keyed groups with a verified subject, else `ip:<address>`,
        as the request's tenant's (`edgemart.tenantscope.scoped`): a subject or an address
        in one marketplace is another client than the same one in another (decision 0043)."""
        if policy.key == "user" and self.subject_of is not None:
            subject = self.subject_of(scope)
            if subject:
                return scoped(tenant_of(scope), f"user:{subject}")
        return scoped(tenant_of(scope), f"ip:{client_ip(scope, self.trusted_proxies)}")
