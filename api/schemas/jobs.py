"""Bodies of /api/v1/scheduler/jobs (api/controllers/jobs.py): what a create, an update
and a trigger take, and how a job, its preview and its history read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from api.schemas.common import CursorPage, HistoryEvent, Request

JobName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Misfire = Literal["skip", "run_once", "run_all"]
Overlap = Literal["allow", "skip", "queue_one", "cancel_previous"]


class TargetIn(Request):
    """A deployment (its active release, with its variables) or a pipeline (its current
    revision at each fire, or `revision`)."""

    deployment_id: UUID | None = None
    pipeline_id: UUID | None = None
    revision: Annotated[int, msgspec.Meta(ge=1)] | None = None


class JobWrite(Request):
    """A job's definition: what a create takes, and what an update replaces whole."""

    name: JobName
    target: TargetIn
    cron_expr: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    """Five fields (minute hour day month weekday), a sixth for seconds (last), or
    @hourly, @daily, @weekly, @monthly, @yearly."""
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    params: dict[str, Any] = {}
    """Over the deployment's variables, under a trigger's own params (at most 64 KiB)."""
    misfire_policy: Misfire = "skip"
    max_catchup: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    overlap_policy: Overlap = "skip"
    jitter_seconds: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 0
    start_at: datetime | None = None
    end_at: datetime | None = None
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    labels: dict[str, str] = {}


class JobCreate(JobWrite, kw_only=True):
    enabled: bool = True


class JobTrigger(Request):
    params: dict[str, Any] = {}
    """Over the job's params, key by key."""


class BackfillRequest(Request):
    start: datetime
    end: datetime
    """Both ends inclusive; times with their UTC offset."""
    max_runs: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    """More scheduled times than this in the range is refused (422), not cut short."""


class FireRun(msgspec.Struct):
    scheduled_for: datetime
    run_id: str


class BackfillOut(msgspec.Struct, kw_only=True):
    job_id: str
    queued: list[FireRun]
    already_run: list[FireRun]
    """Times that had a run already (by the schedule or an earlier backfill)."""
    position: int | None


class TargetOut(msgspec.Struct):
    deployment_id: str | None
    pipeline_id: str | None
    revision: int | None


class JobRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    target: TargetOut
    cron_expr: str
    timezone: str
    params: dict[str, Any]
    misfire_policy: str
    max_catchup: int
    overlap_policy: str
    jitter_seconds: int
    start_at: datetime | None
    end_at: datetime | None
    description: str
    labels: dict[str, str]
    enabled: bool
    disabled_reason: str | None
    next_run: datetime | None
    """The next nominal fire time (before jitter); null while disabled or past end_at."""
    last_run: datetime | None
    """The scheduled time of the last fire."""
    last_run_id: str | None
    last_status: str | None
    """Its run's status."""
    fired: int
    skipped: int
    missed: int
    refused: int
    late: int
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class JobWritten(msgspec.Struct, kw_only=True):
    """A command's answer: the job as its append left it."""

    id: str
    name: str
    enabled: bool
    disabled_reason: str | None
    next_run: datetime | None
    version: int
    position: int | None


class JobDeletedOut(msgspec.Struct):
    id: str
    deleted: bool
    version: int
    position: int | None


class JobPage(CursorPage, kw_only=True):
    items: list[JobRead]


class FireTime(msgspec.Struct):
    utc: datetime
    local: datetime


class PreviewOut(msgspec.Struct):
    items: list[FireTime]


class JobHistoryOut(msgspec.Struct):
    items: list[HistoryEvent]


class JobTriggered(msgspec.Struct, kw_only=True):
    run_id: str
    status: str
    pipeline_id: str
    revision: int
    job_id: str
    position: int | None
