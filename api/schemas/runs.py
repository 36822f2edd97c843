from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec

from api.schemas.common import CursorPage, Request
from domain.run import RunStatus, StepStatus


class RunCreate(Request):
    params: dict[str, Any] = {}
    revision: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """The revision to run; the latest when absent."""


class RunQueuedOut(msgspec.Struct):
    run_id: str
    status: RunStatus
    revision: int
    position: int | None


class ExecuteRequest(Request):
    pipeline_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    pipeline_id: str | None = None
    context: dict[str, Any] = {}
    """The run's params."""
    wait: bool = False
    """Wait (at most NORN_EXECUTE_WAIT_TIMEOUT seconds) for the run to finish."""


class ExecuteOut(msgspec.Struct):
    run_id: str
    status: RunStatus
    success: bool | None
    """null while the run has not finished."""
    error: str | None
    context: dict[str, Any]
    executed_at: datetime | None
    position: int | None


class RetryRequest(Request):
    from_failed_step: bool = False


class StepRead(msgspec.Struct, kw_only=True):
    name: str
    plugin: str
    depends_on: list[str]
    status: StepStatus
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: str | None
    records_in: int
    records_out: int
    reused: bool


class RunRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    pipeline_id: str
    pipeline_name: str
    namespace: str | None
    revision: int
    status: RunStatus
    trigger: dict[str, str | int | None]
    """kind and id; a deployment's run also environment and release."""
    retry_of: str | None
    retried_by: str | None
    """Its latest retry's id: while that run is queued or running, retrying this one is
    a 409."""
    resume_from: str | None
    params: dict[str, Any]
    attempt: int
    executor_id: str | None
    cancel_requested: bool
    error: str | None
    current_step: str | None
    created_by: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    version: int


class RunDetail(RunRead, kw_only=True):
    steps: list[StepRead]


class RunPage(CursorPage, kw_only=True):
    items: list[RunRead]


class RunChangedOut(msgspec.Struct):
    run_id: str
    status: RunStatus
    cancel_requested: bool
    version: int
    position: int | None


class RunStatusOut(msgspec.Struct, kw_only=True):
    run_id: str
    status: RunStatus
    current_step: str | None
    progress: float
    """Percent of steps finished (succeeded, failed, skipped or cancelled)."""
    steps_total: int
    steps_finished: int
    started_at: datetime | None
    finished_at: datetime | None
    estimated_completion: datetime | None
    """From the mean duration of the pipeline's recent successful runs."""


class LogLine(msgspec.Struct):
    step: str
    attempt: int
    at: datetime
    level: str
    message: str


class RunLogsOut(msgspec.Struct):
    run_id: str
    items: list[LogLine]
    truncated: bool


class RunCountsOut(msgspec.Struct, kw_only=True):
    total: int
    """Runs queued in the window, whatever their status now."""
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    timed_out: int
    crashed: int
    finished: int
    """Runs with an outcome: succeeded, failed, cancelled, timed_out or crashed."""
    success_rate: float | None
    """succeeded / finished, from 0 to 1; null while no run has finished."""
    avg_duration_ms: float | None
    """Mean duration of the finished runs that started (null if none)."""
    p95_duration_ms: float | None
    """95th percentile (interpolated) of the same durations."""


class PipelineRunCountsOut(RunCountsOut, kw_only=True):
    pipeline_id: str
    pipeline_name: str
    """The name its latest run in the window carried."""
    tenant_id: str


class DayRunCountsOut(RunCountsOut, kw_only=True):
    day: date
    """A UTC day; every day of the window is listed, days without runs as zeros."""


class RunStatisticsOut(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    """The window [since, until): runs count by the time they were queued."""
    pipeline_id: str | None
    totals: RunCountsOut
    per_pipeline: list[PipelineRunCountsOut]
    """Most runs first."""
    per_day: list[DayRunCountsOut]
    """Oldest first."""
