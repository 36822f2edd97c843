"""Per-principal rate limits by plan (docs/architecture.md §8, 429 RATE_LIMIT_EXCEEDED): every
authenticated request takes a token from its principal's bucket, decided in this process's
memory and shared with the other API processes in the background
(infrastructure/rate_limit_sync.py). Every such response carries X-RateLimit-Limit
(requests per hour), X-RateLimit-Remaining (requests that may be sent now) and
X-RateLimit-Reset (seconds until a request is allowed again, 0 while one is); a refused one also
Retry-After."""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from application.errors import RateLimited
from application.principal import Principal

STATE_KEY = "rate_limit_headers"
"""Where the headers wait in the request's state, for the app's outermost send (api/app.py),
which adds them to whatever response leaves, error responses included."""


class RateLimitMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        principal = scope.get("user")
        if not isinstance(principal, Principal):  # public routes
            await next_app(scope, receive, send)
            return
        container: Any = scope["app"].state.container
        decision = await take_token(container, principal)
        headers = [
            (b"x-ratelimit-limit", str(decision.limit).encode()),
            (b"x-ratelimit-remaining", str(decision.remaining).encode()),
            (b"x-ratelimit-reset", str(decision.reset_after).encode()),
        ]
        scope.setdefault("state", {})[STATE_KEY] = headers  # type: ignore[typeddict-item]
        if not decision.allowed:
            raise refusal(decision, principal)
        await next_app(scope, receive, send)


async def take_token(container: Any, principal: Principal) -> Any:
    """One request's token from the principal's bucket: the decision (allowed or not,
    and the figures of the headers). Also what an MCP tool call over stdio takes
    (api/mcp_tools.py), which passes through no HTTP middleware."""
    limit = container.rate_limits[_plan_of(principal)]
    return await container.rate_limiter.hit(f"{principal.kind}:{principal.subject_id}", limit)


def refusal(decision: Any, principal: Principal) -> RateLimited:
    return RateLimited(
        f"rate limit of {decision.limit} requests per hour (plan {_plan_of(principal)}) "
        f"reached; retry in {decision.retry_after}s",
        decision.retry_after,
    )


def _plan_of(principal: Principal) -> str:
    """Platform admins have the platform limit, also while acting in a tenant with
    X-Tenant-ID: their one bucket must not take the limits of whichever tenant they look
    at (a free tenant's burst would cut it down); everyone else has its tenant's plan."""
    if principal.is_platform_admin:
        return "platform"
    return principal.plan or "free"
