"""Read model `pipelines`: the current definition of every live pipeline, one row each,
and the queries that back GET /pipelines and GET /pipelines/{id}.

Every column is derived from the events alone (times are event times, never now()),
so a rebuild from position 0 produces exactly the rows the live projection has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Any, Literal
from uuid import UUID

from psycopg import AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from infrastructure.envelope import CloudEvent
from projections.pagination import Page, Where, check_order, select_page
from projections.projection import Projection, handles, json_rows

PipelineSort = Literal["created_at", "name", "updated_at"]
SORTS: dict[str, type] = {"created_at": datetime, "name": str, "updated_at": datetime}
"""Sortable columns and the type of their values (checked in cursors)."""

_TABLE = sql.Identifier("pipelines")
_COLUMNS = sql.SQL(
    "id, tenant_id, namespace, name, description, tags, steps, timeout, triggers, revision, "
    "version, cloned_from, created_by, updated_by, created_at, updated_at, position"
)

_GET = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(_COLUMNS, _TABLE).as_string(None)
_GET_IN_TENANT = _GET + " AND tenant_id = %s"
"""GET by id, composed once: a query composed per request is turned into text per
request too (psycopg's Composed.as_bytes, 2% of a GET's CPU)."""


def _definition_fields(event: CloudEvent) -> dict[str, Any]:
    definition: dict[str, Any] = event.data["definition"]
    return {
        "timeout": definition.get("timeout"),
        "namespace": definition.get("namespace"),
        "name": definition["name"],
        "description": definition.get("description", ""),
        "tags": list(definition.get("tags", ())),
        "steps": Jsonb(list(definition.get("steps", ()))),
        "triggers": Jsonb(list(definition.get("triggers", ()))),
    }


_CREATED = "norn.pipeline.created.v1"
_DELETED = "norn.pipeline.deleted.v1"
_INSERT_COLUMNS = (
    "id, tenant_id, namespace, name, description, tags, steps, timeout, triggers, revision,"
    " version, cloned_from, created_by, updated_by, created_at, updated_at, position"
)
_INSERT = (
    f"INSERT INTO pipelines ({_INSERT_COLUMNS}) SELECT {_INSERT_COLUMNS}"
    " FROM jsonb_populate_recordset(NULL::pipelines, %s)"
)
"""A stretch of creates in one statement, as one JSON document (`json_rows`): under a burst
the projector had spent a fifth of its time turning each create into an INSERT's sixteen
parameters, and PostgreSQL parsing and planning one statement per row."""
_COUNTS = (
    "INSERT INTO pipeline_counts AS c (tenant_id, live)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[])"
    " ON CONFLICT (tenant_id) DO UPDATE SET live = c.live + EXCLUDED.live"
)
"""Live pipelines per tenant, moved by a batch's creates and deletes summed in Python
(a burst is mostly one tenant's): one statement per batch, not one per event."""


def _created_row(event: CloudEvent) -> dict[str, Any]:
    definition: dict[str, Any] = event.data["definition"]
    return {
        "id": event.subject,
        "tenant_id": event.tenant,
        "namespace": definition.get("namespace"),
        "name": definition["name"],
        "description": definition.get("description", ""),
        "tags": list(definition.get("tags", ())),
        "steps": list(definition.get("steps", ())),
        "timeout": definition.get("timeout"),
        "triggers": list(definition.get("triggers", ())),
        "revision": 1,
        "version": event.version,
        "cloned_from": event.data.get("cloned_from"),
        "created_by": event.actor,
        "updated_by": event.actor,
        "created_at": event.time,
        "updated_at": event.time,
        "position": event.position,
    }


async def _insert_created(cur: AsyncCursor[Any], events: Sequence[CloudEvent]) -> None:
    await cur.execute(_INSERT, (json_rows([_created_row(event) for event in events]),))


async def _count(cur: AsyncCursor[Any], moves: Counter[str]) -> None:
    moved = {tenant: n for tenant, n in moves.items() if n}  # a create and its delete: 0
    if moved:
        tenants = sorted(moved)
        await cur.execute(_COUNTS, (tenants, [moved[t] for t in tenants]))


class PipelinesProjection(Projection):
    name = "pipelines"
    tables = ("pipelines", "pipeline_counts")

    async def apply_events(self, cur: AsyncCursor[Any], events: Sequence[CloudEvent]) -> None:
        """The batch in order, each stretch of creates in one statement, and the counts
        the batch moved in one more at the end (a sum: order does not matter to it)."""
        moves: Counter[str] = Counter()
        # Without the events it ignores: each create comes beside its name claim.
        ours = [(event, handler) for event in events if (handler := self.handler(event.type))]
        for created, stretch in groupby(ours, key=lambda pair: pair[0].type == _CREATED):
            if created:
                run = [event for event, _ in stretch]
                await _insert_created(cur, run)
                moves.update(event.tenant for event in run)
                continue
            for event, handler in stretch:
                if event.type == _DELETED:
                    await self._delete(cur, event)
                    moves[event.tenant] -= 1
                else:
                    await handler(cur, event)
        await _count(cur, moves)

    @handles(_CREATED)
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await _insert_created(cur, [event])
        await _count(cur, Counter({event.tenant: 1}))

    @handles("norn.pipeline.revised.v1", "norn.pipeline.rolled_back.v1")
    async def revised(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # A rollback is a new revision carrying the restored definition: same update.
        await cur.execute(
            "UPDATE pipelines SET namespace = %(namespace)s, name = %(name)s,"
            " timeout = %(timeout)s, triggers = %(triggers)s,"
            " description = %(description)s,"
            " tags = %(tags)s, steps = %(steps)s, revision = %(revision)s,"
            " version = %(version)s, updated_by = %(actor)s, updated_at = %(time)s,"
            " position = %(position)s WHERE id = %(id)s",
            {
                **_definition_fields(event),
                "id": event.subject,
                "revision": event.data["revision"],
                "version": event.version,
                "actor": event.actor,
                "time": event.time,
                "position": event.position,
            },
        )

    @handles("norn.pipeline.credentials_shredded.v1")
    async def credentials_shredded(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # Not a revision: the same one, its credentials held in clear redacted.
        await cur.execute(
            "UPDATE pipelines SET steps = %s, version = %s, position = %s WHERE id = %s",
            (Jsonb(event.data["steps"]), event.version, event.position, event.subject),
        )

    @handles(_DELETED)
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._delete(cur, event)
        await _count(cur, Counter({event.tenant: -1}))

    async def _delete(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # History stays readable from the event stream; the read model lists live ones.
        await cur.execute("DELETE FROM pipelines WHERE id = %s", (event.subject,))


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = str(row["id"])
    return row


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PipelineQueries:
    """Reads of the `pipelines` read model. Every query is scoped to a tenant; a tenant
    of None means a platform admin, who sees every tenant's pipelines."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str | None, pipeline_id: UUID) -> dict[str, Any] | None:
        if tenant_id is None:
            query, params = _GET, (pipeline_id,)
        else:
            query, params = _GET_IN_TENANT, (pipeline_id, tenant_id)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return _row(row) if row is not None else None

    async def list(
        self,
        tenant_id: str | None,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        namespace: str | None = None,
        sort: PipelineSort = "created_at",
        order: Literal["asc", "desc"] = "asc",
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """One page and the cursor of the next (None on the last page). `name` matches
        a case-insensitive substring; a pipeline must carry every one of `tags`. Raises
        ValueError for a bad sort, order, limit or cursor."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if any("\x00" in tag or len(tag) > 100 for tag in tags):
            raise ValueError("a tag filter must be 1 to 100 characters without NUL")
        where = Where().tenant(tenant_id)
        if namespace is not None:
            where.add("namespace = %s", namespace)
        if name:
            where.add("name ILIKE %s", f"%{_escape_like(name)}%")
        if tags:
            where.add("tags @> %s::text[]", list(tags))  # uses the GIN index
        result = await select_page(
            self._pool,
            _COLUMNS,
            _TABLE,
            where,
            sort=sort,
            order=check_order(order),
            value_type=SORTS[sort],
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_row)
