"""What every open event stream shares, SSE (api/controllers/events.py) and WebSocket
(api/controllers/ws.py): its slot under the per-plan limit on open streams
(infrastructure/stream_limits.py), and the recheck of its credentials and roles every
second (infrastructure/event_feed.py `Recheck`)."""

from __future__ import annotations

from litestar.connection import ASGIConnection

from api.auth import Credentials, authenticate
from application.authorization import Permission, authorize, readable_event_kinds
from application.errors import AuthenticationFailed, NotFound, PermissionDenied, RateLimited
from application.principal import Principal
from domain.tenant import TenantStatus
from infrastructure.event_feed import Recheck
from infrastructure.stream_limits import RETRY_AFTER_SECONDS, StreamSlot


def stream_scope(principal: Principal) -> tuple[str, str]:
    """(scope, plan) a principal's streams count in: its tenant's, under the tenant's
    plan; platform admins' all together under `platform`, also while acting in a tenant
    (as for rate limits: a look into a tenant must not take the tenant's slots)."""
    if principal.is_platform_admin or principal.tenant_id is None:
        return "platform", "platform"
    return principal.tenant_id, principal.plan or "free"


async def admit(connection: ASGIConnection, principal: Principal, kind: str) -> StreamSlot:
    """A slot for one more stream of `kind` ('sse' or 'ws'), or RateLimited (429, or close
    4429) when the principal's tenant has its plan's limit of open streams."""
    container = connection.app.state.container
    scope, plan = stream_scope(principal)
    limit = container.stream_limits[plan]
    slot = await container.stream_slots.admit(scope, kind, principal.actor, limit)
    if slot is None:
        raise RateLimited(
            f"{limit} open event streams (SSE and WebSocket together) is the limit of plan "
            f"{plan}; close one or retry in {RETRY_AFTER_SECONDS}s",
            RETRY_AFTER_SECONDS,
        )
    return slot


def recheck(
    connection: ASGIConnection,
    credentials: Credentials | None = None,
    kinds: frozenset[str] | None = None,
) -> Recheck:
    """Whether a stream's credentials still hold: its session not ended, its user active,
    its API key not deleted (each as a request would be authenticated now), its tenant
    neither suspended nor deleted, and its roles still allowing what it reads: events at
    all, and every kind of them in `kinds` (the kinds it was opened with), so a demotion
    ends it as it would refuse the next request (the client opens it again, under its
    roles as they are then). `credentials`: those it presented other than in its headers
    (a WebSocket's first message or ?token=)."""

    async def why_not() -> str | None:
        try:
            principal = await authenticate(connection, credentials=credentials)
        except (AuthenticationFailed, PermissionDenied, NotFound) as refused:
            return str(refused)
        return inactive_tenant(principal) or narrowed(principal, kinds)

    return why_not


def inactive_tenant(principal: Principal) -> str | None:
    """Why a principal's tenant may not stream (None: it may)."""
    if principal.tenant_status not in (None, TenantStatus.ACTIVE):
        return f"tenant {principal.tenant_id} is {principal.tenant_status}"
    return None


def narrowed(principal: Principal, kinds: frozenset[str] | None) -> str | None:
    """Why a stream opened to read events of `kinds` may no longer (None: it may): its
    principal's roles changed since, and now allow no events, or not all of those."""
    try:
        authorize(principal, Permission.EVENTS_READ)
    except PermissionDenied as refused:
        return str(refused)
    if kinds is not None and not kinds <= readable_event_kinds(principal):
        return "your roles changed: open the stream again to read what they allow now"
    return None
