"""Read model `audit_log`: one row per event of the store, every type, with the columns
the audit trail filters on (tenant, aggregate kind, type, resource, actor, time); the
event itself is read from norn_events by its position (projections/audit_queries.py), so
a row is small and the store stays the only copy of what happened.

norn_events has no tenant column (the tenant is inside each event's JSON state), so
without this table listing one tenant's events would decode the whole store.

Every column comes from the event alone, so a rebuild from position 0 gives the same
rows; a row already there (a replay) is left as it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor

from infrastructure.envelope import CloudEvent
from projections.projection import Handler, Projection, json_rows

_COLUMNS = (
    "position, tenant_id, aggregate_type, type, originator_id, version, actor,"
    " correlation_id, causation_id, time"
)
_INSERT = (
    f"INSERT INTO audit_log ({_COLUMNS}) SELECT {_COLUMNS}"
    " FROM jsonb_populate_recordset(NULL::audit_log, %s) ON CONFLICT (position) DO NOTHING"
)
"""A batch's rows in one statement, as one JSON document (`json_rows`): a one-step run's
eight events were eight INSERTs (of the 63 statements a run cost before)."""


def aggregate_type(event: CloudEvent) -> str:
    """`pipeline` of `norn.pipeline.revised.v1`: the kind the feed filters and the
    permission table (application/authorization.py EVENT_READ_PERMISSIONS) use."""
    return event.type.split(".")[1]


class AuditLogProjection(Projection):
    name = "audit_log"
    tables = ("audit_log",)

    def handler(self, event_type: str) -> Handler | None:
        # Every event type, present and future: the audit trail leaves nothing out, so
        # there is no @handles list to keep in step with the domain.
        return self.record

    async def record(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self.apply_events(cur, [event])

    async def apply_events(self, cur: AsyncCursor[Any], events: Sequence[CloudEvent]) -> None:
        if not events:
            return
        rows = [
            {
                "position": event.position,
                "tenant_id": event.tenant,
                "aggregate_type": aggregate_type(event),
                "type": event.type,
                "originator_id": event.subject,
                "version": event.version,
                "actor": event.actor,
                "correlation_id": event.correlationid,
                "causation_id": event.causationid,
                "time": event.time,
            }
            for event in events
        ]
        await cur.execute(_INSERT, (json_rows(rows),))
