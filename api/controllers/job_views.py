"""Conversions between job schemas, the domain and read-model rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from api.controllers.common import body_time
from api.schedule_timeline import TimelineJob
from api.schemas.jobs import JobRead, JobWrite, JobWritten, TargetOut
from application.point_in_time import Past
from application.results import Changed
from application.schedule import ScheduleError, schedule_of
from domain.job import Job, JobSpec, JobTarget
from projections.job_queries import job_spec


def to_spec(body: JobWrite) -> JobSpec:
    target = body.target
    return JobSpec(
        name=body.name,
        target=JobTarget(
            deployment_id=str(target.deployment_id) if target.deployment_id else None,
            pipeline_id=str(target.pipeline_id) if target.pipeline_id else None,
            revision=target.revision,
        ),
        cron_expr=body.cron_expr,
        timezone=body.timezone,
        params=body.params,
        misfire_policy=body.misfire_policy,
        max_catchup=body.max_catchup,
        overlap_policy=body.overlap_policy,
        jitter_seconds=body.jitter_seconds,
        start_at=body_time(body.start_at, "start_at"),
        end_at=body_time(body.end_at, "end_at"),
        description=body.description,
        labels=body.labels,
    )


def next_run(enabled: bool, spec: JobSpec) -> datetime | None:
    """The next nominal fire time from now, by the job's calendar; None while disabled or
    when no time is left before end_at."""
    if not enabled:
        return None
    try:
        return schedule_of(spec).next_fire(datetime.now(UTC))
    except ScheduleError:
        return None  # a definition the calendar of this version no longer reads


def written(result: Changed[Job]) -> JobWritten:
    job = result.state
    spec = job.spec
    return JobWritten(
        id=str(job.id),
        name=spec.name,
        enabled=job.enabled,
        disabled_reason=job.disabled_reason,
        next_run=None if job.deleted else next_run(job.enabled, spec),
        version=result.version,
        position=result.position,
    )


def from_row(row: dict[str, Any]) -> JobRead:
    spec = job_spec(row)
    definition = msgspec.structs.asdict(spec)
    definition["target"] = TargetOut(**msgspec.structs.asdict(spec.target))
    return JobRead(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        **definition,
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        next_run=next_run(row["enabled"], spec),
        last_run=row.get("last_run"),
        last_run_id=row.get("last_run_id"),
        last_status=row.get("last_status"),
        fired=row.get("fired") or 0,
        skipped=row.get("skipped") or 0,
        missed=row.get("missed") or 0,
        refused=row.get("refused") or 0,
        late=row.get("late") or 0,
        version=row["version"],
        created_by=row.get("created_by"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def read_of(past: Past[Job]) -> JobRead:
    """A job as it was (?as_of=), from its events. What the scheduler did with it is not
    in them (job_schedules): last_run, last_run_id and last_status are null and the
    counters 0; next_run, a prediction from now, is null too."""
    job = past.state
    spec = job.spec
    definition = msgspec.structs.asdict(spec)
    definition["target"] = TargetOut(**msgspec.structs.asdict(spec.target))
    return JobRead(
        id=str(job.id),
        tenant_id=job.tenant_id,
        **definition,
        enabled=job.enabled,
        disabled_reason=job.disabled_reason,
        next_run=None,
        last_run=None,
        last_run_id=None,
        last_status=None,
        fired=0,
        skipped=0,
        missed=0,
        refused=0,
        late=0,
        version=past.version,
        created_by=past.created_by,
        created_at=job.created_on,
        updated_at=job.modified_on,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def timeline_job(row: dict[str, Any]) -> TimelineJob:
    spec = job_spec(row)
    target = spec.target
    if target.deployment_id:
        what = f"deployment {target.deployment_id}"
    else:
        what = f"pipeline {target.pipeline_id}" + (
            f" r{target.revision}" if target.revision else ""
        )
    return TimelineJob(name=spec.name, schedule=schedule_of(spec), target=what)
