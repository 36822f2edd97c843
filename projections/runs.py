"""Read model `runs`: one row per run and one per step of it, plus the counts the
quotas read (runs running per tenant, runs queued per tenant and day). Every value is
derived from the events (times are event times), so a rebuild gives the same rows.

Queries over it are in projections/run_queries.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC
from itertools import groupby
from typing import Any

from psycopg import AsyncCursor

from domain.run import TERMINAL as FINISHED
from domain.run import RunStatus
from infrastructure.envelope import CloudEvent
from projections.projection import Projection, handles, json_rows

TERMINAL = tuple(s.value for s in RunStatus if s in FINISHED)
"""The finished statuses, as the plain strings the table holds, in the enum's order."""

_RUNNING = (
    "INSERT INTO run_counts AS c (tenant_id, running) VALUES (%s, %s)"
    " ON CONFLICT (tenant_id) DO UPDATE SET running = c.running + EXCLUDED.running"
)
_QUEUED = "norn.run.queued.v1"
_RUN_COLUMNS = (
    "id, tenant_id, pipeline_id, pipeline_name, namespace, revision, status, trigger_kind,"
    " trigger_id, deployment_id, environment, release, retry_of, resume_from, params,"
    " created_by, queued_at, version, position, scheduled_for"
)
_INSERT_RUNS = (
    f"INSERT INTO runs ({_RUN_COLUMNS}) SELECT {_RUN_COLUMNS}"
    " FROM jsonb_populate_recordset(NULL::runs, %s)"
)
_INSERT_STEPS = (
    "INSERT INTO run_steps (run_id, name, ordinal, plugin, depends_on, status)"
    " SELECT run_id, name, ordinal, plugin, depends_on, status"
    " FROM jsonb_populate_recordset(NULL::run_steps, %s)"
)
_QUEUED_ON_DAYS = (
    "INSERT INTO run_day_counts AS c (tenant_id, day, queued)"
    " SELECT * FROM unnest(%s::text[], %s::date[], %s::bigint[])"
    " ON CONFLICT (tenant_id, day) DO UPDATE SET queued = c.queued + EXCLUDED.queued"
)
"""Runs queued per (tenant, UTC day), counted in Python: a burst is mostly one pair."""


async def _insert_queued(cur: AsyncCursor[Any], events: Sequence[CloudEvent]) -> None:
    """Rows for runs just queued, with their steps (each table's rows one JSON document:
    `json_rows`), and their count of the day: three statements however many runs."""
    runs = [_run_row(event) for event in events]
    steps = [
        {
            "run_id": event.subject,
            "name": step["name"],
            "ordinal": i,
            "plugin": step["plugin"],
            "depends_on": list(step.get("depends_on", ())),
            "status": "pending",
        }
        for event in events
        for i, step in enumerate(event.data["definition"]["steps"])
    ]
    await cur.execute(_INSERT_RUNS, (json_rows(runs),))
    await cur.execute(_INSERT_STEPS, (json_rows(steps),))
    days = Counter((e.tenant, e.time.astimezone(UTC).date()) for e in events)
    await cur.execute(
        _QUEUED_ON_DAYS, ([t for t, _ in days], [d for _, d in days], list(days.values()))
    )


def _run_row(event: CloudEvent) -> dict[str, Any]:
    """The runs row of a RunQueued event (the columns of _RUN_COLUMNS)."""
    data = event.data
    trigger = data["trigger"]
    kind = trigger["kind"]
    return {
        "id": event.subject,
        "tenant_id": event.tenant,
        "pipeline_id": data["pipeline_id"],
        "pipeline_name": data["pipeline_name"],
        "namespace": data["definition"].get("namespace"),
        "revision": data["revision"],
        "status": "queued",
        "trigger_kind": kind,
        "trigger_id": trigger.get("id"),
        "deployment_id": trigger.get("id")
        if kind == "deployment"
        else trigger.get("deployment_id"),
        # A deployment's runs name their environment and release; older events (and
        # every other kind of run) carry neither.
        "environment": trigger.get("environment"),
        "release": trigger.get("release"),
        "retry_of": data.get("retry_of"),
        "resume_from": data.get("resume_from"),
        "params": data["params"],
        "created_by": event.actor,
        "queued_at": event.time,
        "version": event.version,
        "position": event.position,
        "scheduled_for": trigger.get("scheduled_for"),  # a job's fire: its nominal time
    }


class RunsProjection(Projection):
    name = "runs"
    tables = ("runs", "run_steps", "run_counts", "run_day_counts")

    async def apply_events(self, cur: AsyncCursor[Any], events: Sequence[CloudEvent]) -> None:
        """The batch in order, each stretch of RunQueued events written together: a
        scheduler's burst queues hundreds at once, and a statement per run and per step
        cost the projector (and PostgreSQL) more than the rows did."""
        # Without the events it ignores, which would break a stretch in pieces.
        ours = [event for event in events if self.handler(event.type) is not None]
        for queued, stretch in groupby(ours, key=lambda event: event.type == _QUEUED):
            if queued:
                await _insert_queued(cur, list(stretch))
            else:
                await super().apply_events(cur, list(stretch))

    @handles(_QUEUED)
    async def queued(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await _insert_queued(cur, [event])

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

    @handles("norn.run.retried.v1")
    async def retried(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._run(cur, event, retried_by=event.data["retry_id"])

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
