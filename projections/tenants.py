"""Read model `tenants`: one row per tenant (deleted ones too, with their status: the
platform keeps them for audit), and the queries behind GET /tenants."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncCursor, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from domain.tenant import TenantStatus
from infrastructure.envelope import CloudEvent
from projections.pagination import Page, Where, select_one, select_page
from projections.projection import Projection, handles

_TABLE = sql.Identifier("tenants")
_COLUMNS = sql.SQL(
    "id, name, description, plan, status, status_reason, labels, owner, namespaces,"
    " quota_overrides, created_at, updated_at, version, position"
)
STATUSES = tuple(s.value for s in TenantStatus)


class TenantsProjection(Projection):
    name = "tenants"
    tables = ("tenants",)

    @handles("norn.tenant.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO tenants (id, name, description, plan, status, labels, owner,"
            " created_at, updated_at, active_since, version, position)"
            " VALUES (%s, %s, %s, %s, 'active', %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                data["name"],
                data.get("description") or "",
                data.get("plan") or "free",
                Jsonb(data.get("labels") or {}),
                data.get("owner") or "",
                event.time,
                event.time,
                event.time,
                event.version,
                event.position,
            ),
        )

    @handles("norn.tenant.updated.v1")
    async def updated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await self._set(
            cur,
            event,
            name=data["name"],
            description=data["description"],
            labels=Jsonb(data["labels"]),
            owner=data["owner"],
        )

    @handles("norn.tenant.plan_changed.v1")
    async def plan_changed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(cur, event, plan=event.data["plan"])

    @handles("norn.tenant.quotas_set.v1")
    async def quotas_set(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        overrides = {k: v for k, v in event.data["quotas"].items() if v is not None}
        await self._set(cur, event, quota_overrides=Jsonb(overrides))

    @handles("norn.tenant.suspended.v1")
    async def suspended(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(
            cur, event, status="suspended", status_reason=event.data.get("reason") or ""
        )

    @handles("norn.tenant.reactivated.v1")
    async def reactivated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # Since when its jobs may fire: what fell due while it was suspended was missed.
        await self._set(cur, event, status="active", status_reason="", active_since=event.time)

    @handles("norn.tenant.deleted.v1")
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(cur, event, status="deleted")

    @handles("norn.tenant.namespace_added.v1")
    async def namespace_added(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "UPDATE tenants SET namespaces = array_append(namespaces, %s), updated_at = %s,"
            " version = %s, position = %s WHERE id = %s",
            (event.data["namespace"], event.time, event.version, event.position, event.subject),
        )

    @handles("norn.tenant.namespace_removed.v1")
    async def namespace_removed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "UPDATE tenants SET namespaces = array_remove(namespaces, %s), updated_at = %s,"
            " version = %s, position = %s WHERE id = %s",
            (event.data["namespace"], event.time, event.version, event.position, event.subject),
        )

    async def _set(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(name)) for name in columns
        )
        await cur.execute(
            sql.SQL(
                "UPDATE tenants SET {}, updated_at = %s, version = %s, position = %s WHERE id = %s"
            ).format(assignments),
            (*columns.values(), event.time, event.version, event.position, event.subject),
        )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = str(row["id"])
    return row


class TenantQueries:
    """Tenants are platform-level: callers authorise (platform admin, or the tenant's
    own members for get) before asking."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: UUID | str) -> dict[str, Any] | None:
        try:
            key = tenant_id if isinstance(tenant_id, UUID) else UUID(tenant_id)
        except ValueError:
            return None  # not a tenant id at all: not found, rather than a SQL error
        row = await select_one(self._pool, _COLUMNS, _TABLE, Where().add("id = %s", key))
        return _row(row) if row is not None else None

    async def list(
        self,
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
        *,
        status: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Page:
        """Oldest first, keyset-paginated; `labels` must all match. Raises ValueError for
        a bad limit, cursor or status."""
        where = Where()
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}")
            where.add("status = %s", status)
        if labels:
            where.add("labels @> %s", Jsonb(dict(labels)))  # uses the GIN index
        result = await select_page(
            self._pool,
            _COLUMNS,
            _TABLE,
            where,
            sort="created_at",
            order="asc",
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_row)
