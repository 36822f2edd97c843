"""Conversions from run read-model rows and aggregates to response schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from api.schemas.runs import (
    DayRunCountsOut,
    PipelineRunCountsOut,
    RunCountsOut,
    RunDetail,
    RunRead,
    RunStatisticsOut,
    RunStatusOut,
    StepRead,
)
from domain.run import STEP_TERMINAL, RunStatus
from projections.run_statistics import RunCounts, RunStatistics


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def run_read(row: dict[str, Any]) -> RunRead:
    return RunRead(**_run_fields(row))


def run_detail(row: dict[str, Any]) -> RunDetail:
    steps = [
        StepRead(
            name=s["name"],
            plugin=s["plugin"],
            depends_on=list(s["depends_on"]),
            status=s["status"],
            attempts=s["attempts"],
            started_at=s["started_at"],
            finished_at=s["finished_at"],
            duration_ms=_ms(s["started_at"], s["finished_at"]),
            error=s["error"],
            records_in=s["records_in"],
            records_out=s["records_out"],
            reused=s["reused"],
        )
        for s in row["steps"]
    ]
    return RunDetail(**_run_fields(row), steps=steps)


def run_status(row: dict[str, Any], typical_ms: float | None) -> RunStatusOut:
    steps = row["steps"]
    finished = sum(1 for s in steps if s["status"] in STEP_TERMINAL)
    estimate = None
    if row["status"] in (RunStatus.QUEUED, RunStatus.RUNNING) and typical_ms is not None:
        start = row["started_at"] or datetime.now(UTC)
        estimate = max(start + timedelta(milliseconds=typical_ms), datetime.now(UTC))
    return RunStatusOut(
        run_id=str(row["id"]),
        status=row["status"],
        current_step=row["current_step"],
        progress=round(100.0 * finished / len(steps), 1) if steps else 100.0,
        steps_total=len(steps),
        steps_finished=finished,
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        estimated_completion=estimate,
    )


def _trigger(row: dict[str, Any]) -> dict[str, str | int | None]:
    """Who or what queued the run; a deployment's run also names its environment and
    release (its id is the deployment's; a job's run of a deployment names the
    deployment too)."""
    trigger: dict[str, str | int | None] = {"kind": row["trigger_kind"], "id": row["trigger_id"]}
    if row.get("deployment_id") is not None:
        if row["trigger_kind"] != "deployment":
            trigger["deployment_id"] = str(row["deployment_id"])
        trigger["environment"] = row["environment"]
        trigger["release"] = row["release"]
    if row.get("scheduled_for") is not None:
        trigger["scheduled_for"] = row["scheduled_for"].isoformat().replace("+00:00", "Z")
    return trigger


def _run_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "tenant_id": row["tenant_id"],
        "pipeline_id": str(row["pipeline_id"]),
        "pipeline_name": row["pipeline_name"],
        "namespace": row["namespace"],
        "revision": row["revision"],
        "status": row["status"],
        "trigger": _trigger(row),
        "retry_of": row["retry_of"],
        "retried_by": str(row["retried_by"]) if row["retried_by"] else None,
        "resume_from": row["resume_from"],
        "params": row["params"],
        "attempt": row["attempt"],
        "executor_id": row["executor_id"],
        "cancel_requested": row["cancel_requested"],
        "error": row["error"],
        "current_step": row["current_step"],
        "created_by": row["created_by"],
        "queued_at": row["queued_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_ms": row["duration_ms"],
        "version": row["version"],
    }


def statistics_out(stats: RunStatistics, pipeline_id: UUID | None) -> RunStatisticsOut:
    return RunStatisticsOut(
        since=stats.since,
        until=stats.until,
        pipeline_id=str(pipeline_id) if pipeline_id else None,
        totals=RunCountsOut(**_count_fields(stats.totals)),
        per_pipeline=[
            PipelineRunCountsOut(
                **_count_fields(p.counts),
                pipeline_id=p.pipeline_id,
                pipeline_name=p.pipeline_name,
                tenant_id=p.tenant_id,
            )
            for p in stats.per_pipeline
        ],
        per_day=[
            DayRunCountsOut(**_count_fields(counts), day=day) for day, counts in stats.per_day
        ],
    )


def _count_fields(counts: RunCounts) -> dict[str, Any]:
    return {
        "total": counts.total,
        **counts.by_status,
        "finished": counts.finished,
        "success_rate": counts.success_rate,
        "avg_duration_ms": counts.avg_duration_ms,
        "p95_duration_ms": counts.p95_duration_ms,
    }
