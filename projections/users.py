"""Read model `users`: one row per live user (never the password hash, which published
events do not carry), and the queries behind GET /users. Deleted users have no row.

Authentication does not use this table: it loads the user from the event store, so a
deactivation holds before this projection has caught up."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncCursor, sql
from psycopg_pool import AsyncConnectionPool

from infrastructure.envelope import CloudEvent
from projections.pagination import Page, Where, select_one, select_page
from projections.projection import Projection, handles

_TABLE = sql.Identifier("users")
_COLUMNS = sql.SQL(
    "id, tenant_id, username, roles, active, created_by, created_at, updated_at, version, position"
)

_TOUCHED = ("updated_at", "version", "position")


class UsersProjection(Projection):
    name = "users"
    tables = ("users",)

    @handles("norn.user.registered.v1")
    async def registered(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "INSERT INTO users (id, tenant_id, username, roles, active, created_by, created_at,"
            " updated_at, version, position) VALUES (%s, %s, %s, %s, true, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                event.data["username"],
                list(event.data["roles"]),
                event.actor,
                event.time,
                event.time,
                event.version,
                event.position,
            ),
        )

    @handles("norn.user.roles_changed.v1")
    async def roles_changed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(cur, event, roles=list(event.data["roles"]))

    @handles("norn.user.deactivated.v1")
    async def deactivated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(cur, event, active=False)

    @handles("norn.user.reactivated.v1")
    async def reactivated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(cur, event, active=True)

    @handles("norn.user.password_changed.v1")
    async def password_changed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._set(cur, event)  # only when and in which version it changed

    @handles("norn.user.deleted.v1")
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute("DELETE FROM users WHERE id = %s", (event.subject,))

    async def _set(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        assignments = [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in columns]
        assignments += [sql.SQL("{} = %s").format(sql.Identifier(n)) for n in _TOUCHED]
        await cur.execute(
            sql.SQL("UPDATE users SET {} WHERE id = %s").format(sql.SQL(", ").join(assignments)),
            (*columns.values(), event.time, event.version, event.position, event.subject),
        )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = str(row["id"])
    row["roles"] = list(row["roles"])
    return row


class UserQueries:
    """`tenant_id` None means a platform admin not acting in a tenant: every user."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str | None, user_id: UUID) -> dict[str, Any] | None:
        where = Where().add("id = %s", user_id).tenant(tenant_id)
        row = await select_one(self._pool, _COLUMNS, _TABLE, where)
        return _row(row) if row is not None else None

    async def list(
        self,
        tenant_id: str | None,
        *,
        role: str | None = None,
        active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Oldest first, keyset-paginated; raises ValueError for a bad limit or cursor."""
        where = Where().tenant(tenant_id)
        if role is not None:
            where.add("%s = ANY(roles)", role)
        if active is not None:
            where.add("active = %s", active)
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
