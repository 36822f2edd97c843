"""Queries over the `deployments` read model (projections/deployments.py): one deployment,
lists filtered by pipeline, environment, status and labels, a deployment's releases, and
the deadline sweep's candidates. Every query is scoped to a tenant; a tenant of None
means a platform admin, who sees every tenant's deployments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from domain.release import DeploymentStatus
from projections.pagination import Page, Where, check_order, select_one, select_page
from projections.runs import TERMINAL

_TABLE = sql.Identifier("deployments")
DEPLOYMENT_COLUMNS = sql.SQL(
    "id, tenant_id, pipeline_id, environment, status, active_release, active_revision,"
    " verifying_release, verifying_revision, verifying_run_id, verifying_deadline,"
    " verifying_since, release_count, strategy, variables, labels, description, triggers,"
    " retired,"
    " created_by, created_at, updated_at, version, position"
)
RELEASE_COLUMNS = (
    "release",
    "revision",
    "strategy",
    "outcome",
    "run_id",
    "deadline",
    "failure",
    "rolled_back_to",
    "created_by",
    "created_at",
)
STATUSES = tuple(s.value for s in DeploymentStatus)


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("id", "pipeline_id", "verifying_run_id", "run_id"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


class DeploymentQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str | None, deployment_id: UUID) -> dict[str, Any] | None:
        """The deployment (retired ones too), or None if the tenant has no such one."""
        where = Where().add("id = %s", deployment_id).tenant(tenant_id)
        row = await select_one(self._pool, DEPLOYMENT_COLUMNS, _TABLE, where)
        return _ids(row) if row is not None else None

    async def list(
        self,
        tenant_id: str | None,
        *,
        pipeline_id: UUID | None = None,
        environment: str | None = None,
        status: str | None = None,
        labels: Mapping[str, str] | None = None,
        order: str = "asc",
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Oldest first by default, keyset-paginated on (created_at, id); a deployment
        must carry every one of `labels`. Raises ValueError for a bad filter, limit or
        cursor."""
        where = Where().tenant(tenant_id)
        if pipeline_id is not None:
            where.add("pipeline_id = %s", pipeline_id)
        if environment is not None:
            if "\x00" in environment or len(environment) > 63:
                raise ValueError("environment must be an environment name")
            where.add("environment = %s", environment)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}")
            where.add("status = %s", status)
        if labels:
            if any("\x00" in f"{k}{v}" for k, v in labels.items()):
                raise ValueError("a label filter must not contain NUL")
            where.add("labels @> %s", Jsonb(dict(labels)))  # uses the GIN index
        result = await select_page(
            self._pool,
            DEPLOYMENT_COLUMNS,
            _TABLE,
            where,
            sort="created_at",
            order=check_order(order),
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_ids)

    async def releases(
        self, tenant_id: str | None, deployment_id: UUID, *, newest_first: bool = False
    ) -> list[dict[str, Any]] | None:
        """Every release of the deployment, by number; None if the tenant has no such
        deployment (an empty list is a deployment projected before its first release)."""
        async with self._pool.connection() as conn:
            return await _releases(conn, tenant_id, deployment_id, newest_first)

    async def with_releases(
        self, tenant_id: str | None, deployment_id: UUID
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
        """The deployment and its releases, newest first, read from one snapshot: the
        projection commits both tables together, and two separate reads could show a
        release's new outcome beside the deployment's old active release."""
        where = Where().add("id = %s", deployment_id).tenant(tenant_id)
        query = sql.SQL("SELECT {} FROM {}{}").format(DEPLOYMENT_COLUMNS, _TABLE, where.clause())
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, where.params)
                row = await cur.fetchone()
            releases = await _releases(conn, tenant_id, deployment_id, True)
        return (_ids(row) if row is not None else None), releases


async def _releases(
    conn: AsyncConnection[Any], tenant_id: str | None, deployment_id: UUID, newest_first: bool
) -> list[dict[str, Any]] | None:
    tenant = sql.SQL("") if tenant_id is None else sql.SQL(" AND d.tenant_id = %s")
    direction = sql.SQL("DESC" if newest_first else "ASC")
    query = sql.SQL(
        "SELECT {columns} FROM deployments d"
        " LEFT JOIN deployment_releases r ON r.deployment_id = d.id"
        " WHERE d.id = %s{tenant} ORDER BY r.release {direction}"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier("r", c) for c in RELEASE_COLUMNS),
        tenant=tenant,
        direction=direction,
    )
    params = [deployment_id] if tenant_id is None else [deployment_id, tenant_id]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if not rows:
        return None
    # A deployment without releases yet joins to one row of NULLs.
    return [
        _ids({c: row[c] for c in RELEASE_COLUMNS}) for row in rows if row["release"] is not None
    ]


# Verifying releases whose deadline has passed, or whose run has ended (the outcome the
# run's executor may have failed to tell). The partial index holds only verifying rows.
_DUE = (
    "SELECT d.id FROM deployments d LEFT JOIN runs r ON r.id = d.verifying_run_id"
    " WHERE d.verifying_release IS NOT NULL"
    " AND (d.verifying_deadline <= %s OR r.status = ANY(%s))"
    " ORDER BY d.verifying_deadline, d.id LIMIT %s"
)


class VerifyingDeployments:
    """The deadline sweep's candidates (application/deployment_verification.py), read
    synchronously: the sweep runs in a worker thread. Only nominates: the sweep decides
    on the deployment's and the run's own events, so a row that lags costs a no-op now
    or a candidate found on the next pass."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def due(self, now: datetime, limit: int) -> list[UUID]:
        with self._pool.connection() as conn:
            rows = conn.execute(_DUE, (now, list(TERMINAL), limit)).fetchall()
        return [row[0] for row in rows]
