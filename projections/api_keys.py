"""Read model `api_keys`: one row of metadata per API key (never its secret or hash, which
the published events do not carry), and the queries behind GET /api-keys.

Authentication does not use this table: it loads the key from the event store, so a
revocation is effective before this projection has caught up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncCursor, sql
from psycopg_pool import AsyncConnectionPool

from infrastructure.envelope import CloudEvent
from projections.pagination import Page, Where, select_one, select_page
from projections.projection import Projection, handles

_COLUMNS = sql.SQL(
    "k.id, k.tenant_id, k.name, k.prefix, k.roles, k.expires_at, k.created_by, k.created_at,"
    " k.revoked, k.revoked_at, k.version, k.position, u.last_used_at"
)
_FROM = sql.SQL("api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id")


def _time(value: Any) -> datetime | None:
    """A time of an event, as the read model can hold it: one that UTC cannot (an expiry
    of 9999-12-31T23:59:59-14:00, accepted before the API refused such times) is kept as
    the last instant UTC holds; PostgreSQL would store the year 10000, which no read of
    the row could return."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if isinstance(moment, datetime) and moment.utcoffset() is not None:
        try:
            moment.astimezone(UTC)
        except OverflowError:
            return (
                datetime.max.replace(tzinfo=UTC)
                if moment.year > 1
                else datetime.min.replace(tzinfo=UTC)
            )
    return moment


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
        where = Where().add("k.id = %s", key_id).tenant(tenant_id, "k.tenant_id")
        row = await select_one(self._pool, _COLUMNS, _FROM, where)
        return _row(row) if row is not None else None

    async def list(
        self, tenant_id: str, limit: int = 50, cursor: str | None = None, page: int | None = None
    ) -> Page:
        """Oldest first, keyset-paginated; raises ValueError for a bad limit or cursor."""
        # The keyset names unqualified columns (created_at, id): only api_keys has them.
        result = await select_page(
            self._pool,
            _COLUMNS,
            _FROM,
            Where().tenant(tenant_id, "k.tenant_id"),
            sort="created_at",
            order="asc",
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_row)
