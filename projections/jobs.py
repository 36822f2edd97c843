"""Read model `jobs`: one row per scheduled job (deleted ones too, marked `deleted`: their
history stays readable; lists leave them out), and the count of jobs not deleted per
tenant (the `max_jobs` usage).

Every column is derived from the job's events alone (times are event times), so a
rebuild from position 0 produces the same rows. What the scheduler did with a job (its
counters, last run) is in its own table, job_schedules, which no rebuild touches; the
queries merge it in (docs/architecture.md, "Scheduled jobs").

Queries are in projections/job_queries.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from infrastructure.envelope import CloudEvent
from projections.projection import Projection, handles

_COUNT = (
    "INSERT INTO job_counts AS c (tenant_id, live) VALUES (%s, %s)"
    " ON CONFLICT (tenant_id) DO UPDATE SET live = c.live + EXCLUDED.live"
)


def target_id(value: str | None) -> str | None:
    """A target id as the read model keeps it and filters on it: a UUID in its canonical
    form (lowercase, hyphenated), so that the same id written or asked for in another
    spelling matches; anything else as it is (the aggregate does not check the form)."""
    if value is None:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return value


def _time(value: Any) -> datetime | None:
    """A stored datetime (ISO 8601 text). One without an offset is taken as UTC, not in
    the session's time zone, so a rebuild anywhere gives the same instant."""
    if value is None:
        return None
    moment = msgspec.convert(value, datetime)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def definition(spec: dict[str, Any]) -> dict[str, Any]:
    """The definition columns of a JobSpec as stored (JobCreated and JobUpdated both carry
    it whole). Fields with a default are read with it, so events stored before a field
    was added still project."""
    target = spec["target"]
    return {
        "name": spec["name"],
        "target_deployment_id": target_id(target.get("deployment_id")),
        "target_pipeline_id": target_id(target.get("pipeline_id")),
        "target_revision": target.get("revision"),
        "cron_expr": spec["cron_expr"],
        "timezone": spec.get("timezone", "UTC"),
        "params": Jsonb(spec.get("params") or {}),
        "misfire_policy": spec.get("misfire_policy", "skip"),
        "max_catchup": spec.get("max_catchup", 10),
        "overlap_policy": spec.get("overlap_policy", "skip"),
        "jitter_seconds": spec.get("jitter_seconds", 0),
        "start_at": _time(spec.get("start_at")),
        "end_at": _time(spec.get("end_at")),
        "description": spec.get("description", ""),
        "labels": Jsonb(spec.get("labels") or {}),
    }


class JobsProjection(Projection):
    name = "jobs"
    tables = ("jobs", "job_counts")

    @handles("norn.job.created.v1")
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        columns = {
            "id": event.subject,
            "tenant_id": event.tenant,
            **definition(event.data["spec"]),
            "enabled": event.data["enabled"],
            "enabled_at": event.time if event.data["enabled"] else None,
            "created_by": event.actor,
            "created_at": event.time,
            "updated_at": event.time,
            "version": event.version,
            "position": event.position,
        }
        await cur.execute(
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            tuple(columns.values()),
        )
        await cur.execute(_COUNT, (event.tenant, 1))

    @handles("norn.job.updated.v1")
    async def updated(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # The spec replaces the definition whole, as the aggregate replaces it.
        await self._job(cur, event, **definition(event.data["spec"]))

    @handles("norn.job.enabled.v1")
    async def enabled(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # Since when it may fire: what fell due while it was off was missed.
        await self._job(cur, event, enabled=True, disabled_reason=None, enabled_at=event.time)

    @handles("norn.job.disabled.v1")
    async def disabled(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await self._job(cur, event, enabled=False, disabled_reason=event.data.get("reason"))

    @handles("norn.job.deleted.v1")
    async def deleted(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        # `enabled` stays as it was, as in the aggregate: `deleted` is what ends a job.
        await self._job(cur, event, deleted=True)
        await cur.execute(_COUNT, (event.tenant, -1))

    async def _job(self, cur: AsyncCursor[Any], event: CloudEvent, **columns: Any) -> None:
        """Set columns of the job's row, and its updated_at, version and position."""
        names = [*columns, "updated_at", "version", "position"]
        values = [*columns.values(), event.time, event.version, event.position]
        assignments = ", ".join(f"{name} = %s" for name in names)
        await cur.execute(f"UPDATE jobs SET {assignments} WHERE id = %s", (*values, event.subject))
