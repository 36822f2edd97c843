"""Read model `webhooks`: one row per webhook (deleted ones too, marked `deleted`; lists
leave them out). Every column comes from the webhook's events alone, so a rebuild from
position 0 gives the same rows. The signing secret is in no event and so in no row.

What the notifier does (routes, deliveries) is in its own tables (migration 0015), which
no rebuild touches. Queries are in projections/webhook_queries.py."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from infrastructure.envelope import CloudEvent
from projections.projection import Projection, handles


class WebhooksProjection(Projection):
    name = "webhooks"
    tables = ("webhooks",)

    @handles("norn.webhook.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO webhooks (id, tenant_id, url, events, description, active,"
            " created_by, created_at, updated_at, version, position)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                data["url"],
                Jsonb(list(data["events"])),
                data.get("description", ""),
                data["active"],
                event.actor,
                event.time,
                event.time,
                event.version,
                event.position,
            ),
        )

    @handles("norn.webhook.updated.v1")
    async def updated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await self._webhook(
            cur,
            event,
            url=data["url"],
            events=Jsonb(list(data["events"])),
            description=data.get("description", ""),
        )

    @handles("norn.webhook.activated.v1")
    async def activated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._webhook(cur, event, active=True, disabled_reason=None)

    @handles("norn.webhook.deactivated.v1")
    async def deactivated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._webhook(cur, event, active=False)

    @handles("norn.webhook.disabled.v1")
    async def disabled(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._webhook(cur, event, active=False, disabled_reason=event.data.get("reason"))

    @handles("norn.webhook.secret_rotated.v1")
    async def secret_rotated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._webhook(cur, event)  # the version moves (ETag); no secret here

    @handles("norn.webhook.deleted.v1")
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._webhook(cur, event, deleted=True)

    async def _webhook(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        """Set columns of the webhook's row, and its updated_at, version and position."""
        names = [*columns, "updated_at", "version", "position"]
        values = [*columns.values(), event.time, event.version, event.position]
        assignments = ", ".join(f"{name} = %s" for name in names)
        await cur.execute(
            f"UPDATE webhooks SET {assignments} WHERE id = %s", (*values, event.subject)
        )
