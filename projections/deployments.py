"""Read model `deployments`: one row per deployment (retired ones too: their history
stays readable) with its active and verifying release, one row per release of it, and
the count of live deployments per tenant (the `max_deployments` usage).

Every column is derived from the events alone (times are event times; a verifying
release's deadline is its event's time plus the strategy's timeout, as the aggregate
computes it), so a rebuild from position 0 produces the same rows. Status is derived as
the aggregate derives it (domain/deployment.py).

Queries are in projections/deployment_queries.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from infrastructure.envelope import CloudEvent
from projections.projection import Projection, handles

_COUNT = (
    "INSERT INTO deployment_counts AS c (tenant_id, live) VALUES (%s, %s)"
    " ON CONFLICT (tenant_id) DO UPDATE SET live = c.live + EXCLUDED.live"
)
# After the columns an event changes: the status, from them (an UPDATE's CASE would read
# the row as it was before that statement).
_STATUS = (
    "UPDATE deployments SET status = CASE WHEN retired THEN 'retired'"
    " WHEN active_release IS NOT NULL THEN 'active'"
    " WHEN verifying_release IS NOT NULL THEN 'verifying'"
    " WHEN release_count > 0 THEN 'failed' ELSE 'pending' END WHERE id = %s"
)
_NOT_VERIFYING = {
    "verifying_release": None,
    "verifying_revision": None,
    "verifying_run_id": None,
    "verifying_deadline": None,
    "verifying_since": None,
}


class DeploymentsProjection(Projection):
    name = "deployments"
    tables = ("deployments", "deployment_releases", "deployment_counts")
    pipelined = False  # activating a release reads the row it replaces (_activate)

    @handles("norn.deployment.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "INSERT INTO deployments (id, tenant_id, pipeline_id, environment, status,"
            " strategy, variables, labels, description, triggers, created_by, created_at,"
            " updated_at, version, position) VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                data["pipeline_id"],
                data["environment"],
                Jsonb(data["strategy"]),
                Jsonb(data.get("variables") or {}),
                Jsonb(data.get("labels") or {}),
                data.get("description", ""),
                Jsonb(list(data.get("triggers") or [])),
                event.actor,
                event.time,
                event.time,
                event.version,
                event.position,
            ),
        )
        await cur.execute(_COUNT, (event.tenant, 1))

    @handles("norn.deployment.release_activated.v1")
    async def release_activated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await self._add_release(cur, event, data["revision"], Jsonb(data["strategy"]), "active")
        await self._activate(cur, event, data.get("previous_release"), "superseded")

    @handles("norn.deployment.release_verifying.v1")
    async def release_verifying(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        deadline = event.time + timedelta(seconds=data["strategy"].get("verification_timeout") or 0)
        await self._add_release(
            cur,
            event,
            data["revision"],
            Jsonb(data["strategy"]),
            "verifying",
            run_id=data["run_id"],
            deadline=deadline,
        )
        await self._deployment(
            cur,
            event,
            release_count=data["release"],
            verifying_release=data["release"],
            verifying_revision=data["revision"],
            verifying_run_id=data["run_id"],
            verifying_deadline=deadline,
            verifying_since=event.time,
        )

    @handles("norn.deployment.release_verified.v1")
    async def release_verified(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._activate(cur, event, event.data.get("previous_release"), "superseded")

    @handles("norn.deployment.release_failed.v1")
    async def release_failed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "UPDATE deployment_releases SET outcome = 'failed', failure = %s"
            " WHERE deployment_id = %s AND release = %s",
            (event.data["reason"], event.subject, event.data["release"]),
        )
        await self._deployment(cur, event, **_NOT_VERIFYING)

    @handles("norn.deployment.rolled_back.v1")
    async def rolled_back(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        # The new release runs the restored release's revision with its strategy.
        await cur.execute(
            "INSERT INTO deployment_releases (deployment_id, release, revision, strategy,"
            " outcome, rolled_back_to, created_by, created_at) SELECT %s, %s, %s, strategy,"
            " 'active', %s, %s, %s FROM deployment_releases"
            " WHERE deployment_id = %s AND release = %s",
            (
                event.subject,
                data["release"],
                data["revision"],
                data["rolled_back_to"],
                event.actor,
                event.time,
                event.subject,
                data["rolled_back_to"],
            ),
        )
        await self._activate(cur, event, data["previous_release"], "rolled_back")

    @handles("norn.deployment.triggers_set.v1")
    async def triggers_set(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._deployment(cur, event, triggers=Jsonb(list(event.data["triggers"])))

    @handles("norn.deployment.retired.v1")
    async def retired(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._deployment(cur, event, retired=True)
        await cur.execute(_COUNT, (event.tenant, -1))

    async def _add_release(
        self,
        cur: AsyncCursor[Any],
        event: CloudEvent,
        revision: int,
        strategy: Jsonb,
        outcome: str,
        **verification: Any,
    ) -> None:
        await cur.execute(
            "INSERT INTO deployment_releases (deployment_id, release, revision, strategy,"
            " outcome, run_id, deadline, created_by, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.subject,
                event.data["release"],
                revision,
                strategy,
                outcome,
                verification.get("run_id"),
                verification.get("deadline"),
                event.actor,
                event.time,
            ),
        )

    async def _activate(
        self,
        cur: AsyncCursor[Any],
        event: CloudEvent,
        previous: int | None,
        previous_becomes: str,
    ) -> None:
        """`event.data["release"]` is active now; the one active before it (if any)
        becomes `previous_becomes`. Ends a verification (a verified release's)."""
        release = event.data["release"]
        if previous is not None:
            await cur.execute(
                "UPDATE deployment_releases SET outcome = %s"
                " WHERE deployment_id = %s AND release = %s",
                (previous_becomes, event.subject, previous),
            )
        await cur.execute(
            "UPDATE deployment_releases SET outcome = 'active'"
            " WHERE deployment_id = %s AND release = %s RETURNING revision",
            (event.subject, release),
        )
        row = await cur.fetchone()
        assert row is not None, f"release {release} of {event.subject} was never projected"
        await self._deployment(
            cur,
            event,
            active_release=release,
            active_revision=row[0],
            release_count=release,
            **_NOT_VERIFYING,
        )

    async def _deployment(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        """Set columns of the deployment row, its updated_at, version and position, and
        its status from them. `release_count` only ever grows (a verified release was
        counted when it started verifying)."""
        count = columns.pop("release_count", None)
        names = [*columns, "updated_at", "version", "position"]
        values = [*columns.values(), event.time, event.version, event.position]
        assignments = [f"{name} = %s" for name in names]
        if count is not None:
            assignments.append("release_count = GREATEST(release_count, %s)")
            values.append(count)
        await cur.execute(
            f"UPDATE deployments SET {', '.join(assignments)} WHERE id = %s",
            (*values, event.subject),
        )
        await cur.execute(_STATUS, (event.subject,))
