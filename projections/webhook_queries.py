"""Queries over the `webhooks` read model (projections/webhooks.py) and the notifier's
deliveries (migration 0015). Every query is scoped to a tenant; None is a platform
admin outside any tenant, who sees them all."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from projections.pagination import Page, Where, check_order, select_one, select_page

_WEBHOOKS = sql.Identifier("webhooks")
_DELIVERIES = sql.Identifier("webhook_deliveries")
WEBHOOK_COLUMNS = sql.SQL(
    "id, tenant_id, url, events, description, active, disabled_reason, deleted,"
    " created_by, created_at, updated_at, version, position"
)
DELIVERY_COLUMNS = sql.SQL(
    "id, webhook_id, event_id, event_type, event_time, position, status, manual, attempts,"
    " next_attempt_at, first_attempt_at, last_attempt_at, last_status_code,"
    " last_duration_ms, last_error, delivered_at, created_at"
)
STATUSES = ("pending", "failed", "delivered", "dead")


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("id", "webhook_id"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


class WebhookQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str | None, webhook_id: UUID) -> dict[str, Any] | None:
        """The webhook (deleted ones too, `deleted` True), or None."""
        where = Where().add("id = %s", webhook_id).tenant(tenant_id)
        row = await select_one(self._pool, WEBHOOK_COLUMNS, _WEBHOOKS, where)
        return None if row is None else _ids(row)

    async def list(
        self,
        tenant_id: str | None,
        *,
        active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Webhooks not deleted, newest first. ValueError for a bad limit, cursor, page."""
        where = Where().tenant(tenant_id).add("NOT deleted")
        if active is not None:
            where.add("active = %s", active)
        result = await select_page(
            self._pool,
            WEBHOOK_COLUMNS,
            _WEBHOOKS,
            where,
            sort="created_at",
            order=check_order("desc"),
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_ids)

    async def deliveries(
        self,
        webhook_id: UUID,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """A webhook's deliveries, newest first (the caller has checked it may see the
        webhook). ValueError for a bad status, limit, cursor or page."""
        where = Where().add("webhook_id = %s", webhook_id)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}")
            where.add("status = %s", status)
        result = await select_page(
            self._pool,
            DELIVERY_COLUMNS,
            _DELIVERIES,
            where,
            sort="created_at",
            order=check_order("desc"),
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_ids)
