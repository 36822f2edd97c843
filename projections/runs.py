"""Read model `runs`: one row per run and one per step of it, plus the counts the
quotas read (runs running per tenant, runs queued per tenant and day). Every value is
derived from the events (times are event times), so a rebuild gives the same rows.

Queries over it are in projections/run_queries.py."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from domain.run import TERMINAL as FINISHED
from domain.run import RunStatus
from infrastructure.envelope import CloudEvent
from projections.projection import Projection, handles

TERMINAL = tuple(s.value for s in RunStatus if s in FINISHED)
"""The finished statuses, as the plain strings the table holds, in the enum's order."""

_RUNNING = (
    "INSERT INTO run_counts AS c (tenant_id, running) VALUES (%s, %s)"
    " ON CONFLICT (tenant_id) DO UPDATE SET running = c.running + EXCLUDED.running"
)
_QUEUED_TODAY = (
    "INSERT INTO run_day_counts AS c (tenant_id, day, queued)"
    " VALUES (%s, (%s AT TIME ZONE 'UTC')::date, 1)"
    " ON CONFLICT (tenant_id, day) DO UPDATE SET queued = c.queued + 1"
)


class RunsProjection(Projection):
    name = "runs"
    tables = ("runs", "run_steps", "run_counts", "run_day_counts")

    @handles("norn.run.queued.v1")
    async def queued(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        definition = data["definition"]
        trigger = data["trigger"]
        await cur.execute(
            "INSERT INTO runs (id, tenant_id, pipeline_id, pipeline_name, namespace, revision,"
            " status, trigger_kind, trigger_id, deployment_id, environment, release, retry_of,"
            " resume_from, params, created_by, queued_at, version, position, scheduled_for)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s)",
            (
                event.subject,
                event.tenant,
                data["pipeline_id"],
                data["pipeline_name"],
                definition.get("namespace"),
                data["revision"],
                trigger["kind"],
                trigger.get("id"),
                trigger.get("id")
                if trigger["kind"] == "deployment"
                else trigger.get("deployment_id"),
                # A deployment's runs name their environment and release; older events
                # (and every other kind of run) carry neither.
                trigger.get("environment"),
                trigger.get("release"),
                data.get("retry_of"),
                data.get("resume_from"),
                Jsonb(data["params"]),
                event.actor,
                event.time,
                event.version,
                event.position,
                trigger.get("scheduled_for"),  # a job's fire: its nominal time
            ),
        )
        await cur.executemany(
            "INSERT INTO run_steps (run_id, name, ordinal, plugin, depends_on, status)"
            " VALUES (%s, %s, %s, %s, %s, 'pending')",
            [
                (event.subject, s["name"], i, s["plugin"], list(s.get("depends_on", ())))
                for i, s in enumerate(definition["steps"])
            ],
        )
        await cur.execute(_QUEUED_TODAY, (event.tenant, event.time))

    @handles("norn.run.started.v1")
    async def started(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._run(
            cur,
            event,
            status="running",
            attempt=event.data["attempt"],
            executor_id=event.data["executor_id"],
            started_at=event.time,
            current_step=None,
        )
        await self._reset_steps(cur, event)
        await cur.execute(_RUNNING, (event.tenant, 1))

    @handles("norn.run.step_started.v1")
    async def step_started(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "UPDATE run_steps SET status = 'running', attempts = attempts + 1, error = NULL,"
            " started_at = COALESCE(started_at, %s) WHERE run_id = %s AND name = %s",
            (event.time, event.subject, event.data["step"]),
        )
        await self._run(cur, event, current_step=event.data["step"])

    @handles("norn.run.step_succeeded.v1")
    async def step_succeeded(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        data = event.data
        await cur.execute(
            "UPDATE run_steps SET status = 'succeeded', finished_at = %s,"
            " started_at = COALESCE(started_at, %s), records_in = %s, records_out = %s,"
            " reused = %s WHERE run_id = %s AND name = %s",
            (
                event.time,
                event.time,
                data["records_in"],
                data["records_out"],
                data.get("reused", False),
                event.subject,
                data["step"],
            ),
        )
        await self._run(cur, event)

    @handles("norn.run.step_retrying.v1")
    async def step_retrying(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._step(cur, event, "retrying", event.data["error"], finished=False)

    @handles("norn.run.step_failed.v1")
    async def step_failed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._step(cur, event, "failed", event.data["error"], finished=True)

    @handles("norn.run.step_skipped.v1")
    async def step_skipped(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._step(cur, event, "skipped", event.data["reason"], finished=False)

    @handles("norn.run.cancel_requested.v1")
    async def cancel_requested(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._run(cur, event, cancel_requested=True)

    @handles("norn.run.succeeded.v1")
    async def succeeded(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._finish(cur, event, "succeeded", None, was_running=True)

    @handles("norn.run.failed.v1")
    async def failed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._finish(cur, event, "failed", event.data["error"], was_running=True)

    @handles("norn.run.cancelled.v1")
    async def cancelled(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        was_running = event.data.get("previous_status", "running") == "running"
        reason = event.data.get("reason") or "cancelled"
        await self._finish(cur, event, "cancelled", reason, was_running=was_running)

    @handles("norn.run.timed_out.v1")
    async def timed_out(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        error = f"run timed out after {event.data['timeout']:g}s"
        await self._finish(cur, event, "timed_out", error, was_running=True)

    @handles("norn.run.crashed.v1")
    async def crashed(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._finish(cur, event, "crashed", event.data["reason"], was_running=True)

    @handles("norn.run.requeued.v1")
    async def requeued(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._run(
            cur,
            event,
            status="queued",
            executor_id=None,
            current_step=None,
            error=event.data["reason"],
        )
        await self._reset_steps(cur, event)
        await cur.execute(_RUNNING, (event.tenant, -1))

    async def _finish(
        self,
        cur: AsyncCursor[Any],
        event: CloudEvent,
        status: str,
        error: str | None,
        *,
        was_running: bool,
    ) -> None:
        await cur.execute(
            "UPDATE runs SET status = %s, error = %s, finished_at = %s, current_step = NULL,"
            " duration_ms = EXTRACT(EPOCH FROM %s - started_at) * 1000, version = %s,"
            " position = %s WHERE id = %s",
            (status, error, event.time, event.time, event.version, event.position, event.subject),
        )
        # As the aggregate does: what was still going is cancelled, what never began skipped.
        await cur.execute(
            "UPDATE run_steps SET status = CASE WHEN status IN ('running', 'retrying')"
            " THEN 'cancelled' ELSE 'skipped' END,"
            " finished_at = CASE WHEN status IN ('running', 'retrying') THEN %s"
            " ELSE finished_at END"
            " WHERE run_id = %s AND status IN ('running', 'retrying', 'pending')",
            (event.time, event.subject),
        )
        if was_running:
            await cur.execute(_RUNNING, (event.tenant, -1))

    async def _step(
        self, cur: AsyncCursor[Any], event: CloudEvent, status: str, error: str, *, finished: bool
    ) -> None:
        await cur.execute(
            "UPDATE run_steps SET status = %s, error = %s,"
            " finished_at = CASE WHEN %s THEN %s ELSE finished_at END"
            " WHERE run_id = %s AND name = %s",
            (status, error, finished, event.time, event.subject, event.data["step"]),
        )
        await self._run(cur, event)

    async def _reset_steps(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute(
            "UPDATE run_steps SET status = 'pending', attempts = 0, started_at = NULL,"
            " finished_at = NULL, error = NULL, records_in = 0, records_out = 0,"
            " reused = false WHERE run_id = %s",
            (event.subject,),
        )

    async def _run(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        """Set columns of the run row, and its version and position."""
        names = [*columns, "version", "position"]
        assignments = ", ".join(f"{name} = %s" for name in names)
        await cur.execute(
            f"UPDATE runs SET {assignments} WHERE id = %s",
            (*columns.values(), event.version, event.position, event.subject),
        )
