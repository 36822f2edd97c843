"""The audit trail's answers (GET /api/v1/events, /{resource}/{id}/events)."""

from __future__ import annotations

from api.schemas.common import CursorPage
from infrastructure.envelope import CloudEvent


class AuditEvent(CloudEvent, kw_only=True):
    """An event exactly as every consumer sees it (the CloudEvents envelope, README
    "Event envelope"), plus `requestid`: the X-Request-ID of the API request that caused
    it, when the store holds it (the event's causationid); null for what Norn did by
    itself (actor `system:*`), for a request sent with an Idempotency-Key (its
    causationid is `idempotent:<digest>`, the same for every attempt) and for logins and
    token refreshes (they record only a correlationid)."""

    requestid: str | None


class AuditPage(CursorPage, kw_only=True):
    items: list[AuditEvent]
