"""Read model `secrets`: one row per secret, metadata only (deleted ones marked; lists
leave them out). Every column comes from the secret's events, which hold no value, so
no row can either; a rebuild from position 0 gives the same rows. The values are in
`secret_keys` / `secret_values` (infrastructure/secret_store.py), which no rebuild
touches.

Also here: which pipelines reference a secret, from the `pipelines` read model (a step
config holding `{"secret": "<name>"}` at any depth), for GET /secrets and the delete's
refusal."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from application.ports import SecretReference
from infrastructure.envelope import CloudEvent
from projections.pagination import Page, Where, check_order, select_one, select_page
from projections.projection import Projection, handles
from projections.snapshot import snapshot

_SECRETS = sql.Identifier("secrets")
SECRET_COLUMNS = sql.SQL(
    "id, tenant_id, name, description, allowed_hosts, namespaces, value_version, deleted,"
    " created_by, updated_by, created_at, updated_at, version, position"
)
# Any `secret` key under a step's config whose value is the name ($n, a parameter: the
# name is never spliced into the path).
REFERENCING = (
    "SELECT id::text, name, 'pipeline' FROM pipelines WHERE tenant_id = %(t)s"
    " AND jsonb_path_exists(steps, '$[*].config.**.secret ? (@ == $n)',"
    " jsonb_build_object('n', %(n)s::text))"
    " UNION ALL SELECT id::text, name, 'connection' FROM connections"
    " WHERE tenant_id = %(t)s AND NOT deleted"
    " AND jsonb_path_exists(config, '$.**.secret ? (@ == $n)',"
    " jsonb_build_object('n', %(n)s::text))"
    " ORDER BY 3 DESC, 2, 1"
)


class SecretsProjection(Projection):
    name = "secrets"
    tables = ("secrets",)

    @handles("norn.secret.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO secrets (id, tenant_id, name, description, allowed_hosts,"
            " namespaces, value_version, created_by, updated_by, created_at, updated_at,"
            " version, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                data["name"],
                data.get("description", ""),
                Jsonb(list(data.get("allowed_hosts", ()))),
                Jsonb(list(data.get("namespaces", ()))),
                data["value_version"],
                event.actor,
                event.actor,
                event.time,
                event.time,
                event.version,
                event.position,
            ),
        )

    @handles("norn.secret.recreated.v1")
    async def recreated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        """The name taken again: a new secret as far as readers are concerned."""
        data = event.data
        await self._secret(
            cur,
            event,
            description=data.get("description", ""),
            allowed_hosts=Jsonb(list(data.get("allowed_hosts", ()))),
            namespaces=Jsonb(list(data.get("namespaces", ()))),
            value_version=data["value_version"],
            deleted=False,
            created_by=event.actor,
            created_at=event.time,
        )

    @handles("norn.secret.version_added.v1")
    async def version_added(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._secret(cur, event, value_version=event.data["value_version"])

    @handles("norn.secret.updated.v1")
    async def updated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await self._secret(
            cur,
            event,
            description=data.get("description", ""),
            allowed_hosts=Jsonb(list(data.get("allowed_hosts", ()))),
            namespaces=Jsonb(list(data.get("namespaces", ()))),
        )

    @handles("norn.secret.deleted.v1")
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._secret(cur, event, deleted=True)

    async def _secret(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        """Set columns of the secret's row, and who changed it, when, version, position.
        Guarded by version, so an event applied again changes nothing."""
        names = [*columns, "updated_by", "updated_at", "version", "position"]
        values = [*columns.values(), event.actor, event.time, event.version, event.position]
        assignments = ", ".join(f"{name} = %s" for name in names)
        await cur.execute(
            f"UPDATE secrets SET {assignments} WHERE id = %s AND version < %s",
            (*values, event.subject, event.version),
        )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = str(row["id"])
    return row


class SecretQueries:
    """Reads of the `secrets` read model, scoped to a tenant (None: a platform admin
    outside any tenant, who lists every tenant's)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        """The live secret called `name` in the tenant, or None."""
        where = Where().add("name = %s", name).add("NOT deleted").tenant(tenant_id)
        row = await select_one(self._pool, SECRET_COLUMNS, _SECRETS, where)
        return None if row is None else _row(row)

    async def list(
        self,
        tenant_id: str | None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Live secrets by name. ValueError for a bad limit, cursor or page."""
        where = Where().tenant(tenant_id).add("NOT deleted")
        result = await select_page(
            self._pool,
            SECRET_COLUMNS,
            _SECRETS,
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
        """For each name, the tenant's pipelines and connections referencing it, as
        (id, name, kind)."""
        found: dict[str, list[Any]] = {name: [] for name in names}
        # One snapshot (projections/snapshot.py): a pipeline revised from one name to
        # another between two statements would be listed under both, or neither.
        async with snapshot(self._pool) as source, source.connection() as conn:
            for name in names:
                cur = await conn.execute(REFERENCING, {"t": tenant_id, "n": name})
                found[name] = list(await cur.fetchall())
        return found


class PipelineSecretReferences:
    """application/ports.py `SecretReferences`, for the delete's check (synchronous,
    as commands are)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def referencing(self, tenant_id: str, name: str) -> list[SecretReference]:
        with self._pool.connection() as conn:
            rows = conn.execute(REFERENCING, {"t": tenant_id, "n": name}).fetchall()
        return [SecretReference(ident, name, kind) for ident, name, kind in rows]
