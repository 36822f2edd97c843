"""Read model `tenants`: one row per tenant, and the queries behind GET /tenants."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from infrastructure.envelope import CloudEvent
from projections.pagination import check_limit, keyset, page
from projections.projection import Projection, handles

_COLUMNS = sql.SQL("id, name, description, plan, status, labels, created_at, position")


class TenantsProjection(Projection):
    name = "tenants"
    tables = ("tenants",)

    @handles("norn.tenant.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO tenants (id, name, description, plan, status, labels, created_at,"
            " position) VALUES (%s, %s, %s, %s, 'active', %s, %s, %s)",
            (
                event.subject,
                data["name"],
                data.get("description") or "",
                data.get("plan") or "free",
                Jsonb(data.get("labels") or {}),
                event.time,
                event.position,
            ),
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
        query = sql.SQL("SELECT {} FROM tenants WHERE id = %s").format(_COLUMNS)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (key,))
            row = await cur.fetchone()
        return _row(row) if row is not None else None

    async def list(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Oldest first, keyset-paginated; raises ValueError for a bad limit or cursor."""
        check_limit(limit)
        after, params, order_by = keyset("created_at", "asc", cursor, datetime)
        where = sql.SQL(" WHERE ") + after if after is not None else sql.SQL("")
        query = sql.SQL("SELECT {} FROM tenants{} {} LIMIT %s").format(_COLUMNS, where, order_by)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, limit + 1])
            rows = await cur.fetchall()
        items, next_cursor = page(rows, limit, "created_at", "asc")
        return [_row(r) for r in items], next_cursor
