"""Read model `api_keys`: one row of metadata per API key (never its secret or hash, which
the published events do not carry), and the queries behind GET /api-keys.

Authentication does not use this table: it loads the key from the event store, so a
revocation is effective before this projection has caught up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from infrastructure.envelope import CloudEvent
from projections.pagination import check_limit, keyset, page
from projections.projection import Projection, handles

_COLUMNS = sql.SQL(
    "k.id, k.tenant_id, k.name, k.prefix, k.roles, k.expires_at, k.created_by, k.created_at,"
    " k.revoked, k.revoked_at, k.version, k.position, u.last_used_at"
)
_FROM = sql.SQL("api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class ApiKeysProjection(Projection):
    name = "api_keys"
    tables = ("api_keys",)

    @handles("norn.api_key.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, roles, expires_at, created_by,"
            " created_at, version, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                data["name"],
                data["prefix"],
                list(data["roles"]),
                _time(data.get("expires_at")),
                data["created_by"],
                event.time,
                event.version,
                event.position,
            ),
        )

    @handles("norn.api_key.revoked.v1")
    async def revoked(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "UPDATE api_keys SET revoked = true, revoked_at = %s, version = %s, position = %s"
            " WHERE id = %s",
            (event.time, event.version, event.position, event.subject),
        )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = str(row["id"])
    return row


class ApiKeyQueries:
    """Every query is scoped to one tenant: another tenant's keys are not found."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str, key_id: UUID) -> dict[str, Any] | None:
        query = sql.SQL("SELECT {} FROM {} WHERE k.id = %s AND k.tenant_id = %s").format(
            _COLUMNS, _FROM
        )
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (key_id, tenant_id))
            row = await cur.fetchone()
        return _row(row) if row is not None else None

    async def list(
        self, tenant_id: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Oldest first, keyset-paginated; raises ValueError for a bad limit or cursor."""
        check_limit(limit)
        after, params, order_by = keyset("created_at", "asc", cursor, datetime)
        where = sql.SQL("k.tenant_id = %s")
        if after is not None:
            # keyset() names unqualified columns; both exist only in api_keys here.
            where = where + sql.SQL(" AND ") + after
        query = sql.SQL("SELECT {} FROM {} WHERE {} {} LIMIT %s").format(
            _COLUMNS, _FROM, where, order_by
        )
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [tenant_id, *params, limit + 1])
            rows = await cur.fetchall()
        items, next_cursor = page(rows, limit, "created_at", "asc")
        return [_row(r) for r in items], next_cursor
