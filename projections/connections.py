"""Read model `connections`: one row per connection (deleted ones marked; lists leave
them out), its config as written: credentials are secret references there, as in the
events every column comes from, so a rebuild from position 0 gives the same rows.

Also here: which pipelines use a connection (a step whose `connection` is its name),
from the `pipelines` read model, for GET /connections and the delete's refusal."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from application.ports import ConnectionReference
from infrastructure.envelope import CloudEvent
from projections.pagination import Page, Where, check_order, select_one, select_page
from projections.projection import Projection, handles
from projections.snapshot import snapshot

_CONNECTIONS = sql.Identifier("connections")
CONNECTION_COLUMNS = sql.SQL(
    "id, tenant_id, name, type, config, description, deleted, created_by, updated_by,"
    " created_at, updated_at, version, position"
)
# A step whose `connection` is the name ($n, a parameter: never spliced into the path).
REFERENCING = (
    "SELECT id::text, name FROM pipelines WHERE tenant_id = %s"
    " AND jsonb_path_exists(steps, '$[*] ? (@.connection == $n)',"
    " jsonb_build_object('n', %s::text)) ORDER BY name, id"
)


class ConnectionsProjection(Projection):
    name = "connections"
    tables = ("connections",)

    @handles("norn.connection.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO connections (id, tenant_id, name, type, config, description,"
            " created_by, updated_by, created_at, updated_at, version, position)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                data["name"],
                data["type"],
                Jsonb(data.get("config", {})),
                data.get("description", ""),
                event.actor,
                event.actor,
                event.time,
                event.time,
                event.version,
                event.position,
            ),
        )

    @handles("norn.connection.recreated.v1")
    async def recreated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        """The name taken again: a new connection as far as readers are concerned."""
        data = event.data
        await self._connection(
            cur,
            event,
            type=data["type"],
            config=Jsonb(data.get("config", {})),
            description=data.get("description", ""),
            deleted=False,
            created_by=event.actor,
            created_at=event.time,
        )

    @handles("norn.connection.updated.v1")
    async def updated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await self._connection(
            cur,
            event,
            config=Jsonb(data.get("config", {})),
            description=data.get("description", ""),
        )

    @handles("norn.connection.deleted.v1")
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._connection(cur, event, deleted=True)

    async def _connection(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        """Set columns of the connection's row, and who changed it, when, version,
        position. Guarded by version, so an event applied again changes nothing."""
        names = [*columns, "updated_by", "updated_at", "version", "position"]
        values = [*columns.values(), event.actor, event.time, event.version, event.position]
        assignments = ", ".join(f"{name} = %s" for name in names)
        await cur.execute(
            f"UPDATE connections SET {assignments} WHERE id = %s AND version < %s",
            (*values, event.subject, event.version),
        )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = str(row["id"])
    return row


class ConnectionQueries:
    """Reads of the `connections` read model, scoped to a tenant (None: a platform admin
    outside any tenant, who lists every tenant's)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        """The live connection called `name` in the tenant, or None."""
        where = Where().add("name = %s", name).add("NOT deleted").tenant(tenant_id)
        row = await select_one(self._pool, CONNECTION_COLUMNS, _CONNECTIONS, where)
        return None if row is None else _row(row)

    async def list(
        self,
        tenant_id: str | None,
        *,
        type_: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Live connections by name (of one type, if given). ValueError for a bad limit,
        cursor or page."""
        where = Where().tenant(tenant_id).add("NOT deleted")
        if type_ is not None:
            where.add("type = %s", type_)
        result = await select_page(
            self._pool,
            CONNECTION_COLUMNS,
            _CONNECTIONS,
            where,
            sort="name",
            order=check_order("asc"),
            value_type=str,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_row)

    async def referenced_by(self, tenant_id: str, names: list[str]) -> dict[str, list[Any]]:
        """For each name, the tenant's pipelines using it, as (id, name)."""
        found: dict[str, list[Any]] = {name: [] for name in names}
        # One snapshot (projections/snapshot.py): a pipeline revised from one name to
        # another between two statements would be listed under both, or neither.
        async with snapshot(self._pool) as source, source.connection() as conn:
            for name in names:
                cur = await conn.execute(REFERENCING, (tenant_id, name))
                found[name] = list(await cur.fetchall())
        return found


class PipelineConnectionReferences:
    """application/ports.py `ConnectionReferences`, for the delete's check (synchronous,
    as commands are)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def referencing(self, tenant_id: str, name: str) -> list[ConnectionReference]:
        with self._pool.connection() as conn:
            rows = conn.execute(REFERENCING, (tenant_id, name)).fetchall()
        return [
            ConnectionReference(pipeline_id, pipeline_name) for pipeline_id, pipeline_name in rows
        ]
