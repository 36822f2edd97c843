"""Bodies of /api/v1/deployments (api/controllers/deployments.py): what a create, a
release, an execute and a rollback take, and how a deployment and its releases read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from api.schemas.common import CursorPage, HistoryEvent, Request
from api.schemas.pipelines import TriggerIn, TriggerOut

Environment = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
Number = Annotated[int, msgspec.Meta(ge=1)]


class StrategyIn(Request):
    """`direct` (active at once) or `blue-green` (verified by a run first); the timeout
    (1-86,400 s) and params are blue-green's only."""

    type: Literal["direct", "blue-green"] = "direct"
    verification_timeout: int | None = None
    verification_params: dict[str, Any] = {}


class DeploymentCreate(Request):
    pipeline_id: UUID
    environment: Environment
    revision: Number | None = None
    """The pipeline's current revision by default."""
    strategy: StrategyIn | None = None
    variables: dict[str, Any] = {}
    """The params every run of the deployment starts with (at most 64 KiB of JSON)."""
    labels: dict[str, str] = {}
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    triggers: list[TriggerIn] = []
    """Events that start a run of the active release (README "Event triggers")."""


class DeploymentTriggers(Request):
    """Body of PUT /deployments/{id}/triggers: every trigger, replacing the ones there."""

    triggers: list[TriggerIn]


class DeploymentTriggersOut(msgspec.Struct, kw_only=True):
    id: str
    triggers: list[TriggerOut]
    version: int
    position: int | None
    """None when nothing changed (the same triggers again)."""


class ReleaseCreate(Request):
    revision: Number | None = None
    """The pipeline's current revision by default."""
    strategy: StrategyIn | None = None
    """The deployment's strategy by default."""


class DeploymentExecute(Request):
    params: dict[str, Any] = {}
    """Over the deployment's variables, key by key."""
    wait: bool = False
    """Answer once the run has finished (at most NORN_EXECUTE_WAIT_TIMEOUT seconds)."""


class DeploymentRollback(Request):
    to_release: Number | None = None
    """The previous active release by default."""


class StrategyOut(msgspec.Struct):
    type: str
    verification_timeout: int | None
    verification_params: dict[str, Any]


class ReleaseOut(msgspec.Struct, kw_only=True):
    release: int
    revision: int
    strategy: StrategyOut
    outcome: str
    run_id: str | None
    """The verification run (blue-green)."""
    deadline: datetime | None
    failure: str | None
    rolled_back_to: int | None
    created_by: str
    created_at: datetime


class DeploymentRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    pipeline_id: str
    environment: str
    status: str
    active_release: int | None
    active_revision: int | None
    verifying_release: int | None
    release_count: int
    strategy: StrategyOut
    variables: dict[str, Any]
    labels: dict[str, str]
    description: str
    triggers: list[TriggerOut] = []
    retired: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int


class DeploymentPage(CursorPage):
    items: list[DeploymentRead]


class DeploymentWritten(msgspec.Struct, kw_only=True):
    """A create or a release: the deployment as the command left it and the release it
    made; `position` for ?min_position= on later reads."""

    id: str
    pipeline_id: str
    environment: str
    status: str
    active_release: int | None
    verifying_release: int | None
    release: ReleaseOut
    version: int
    position: int | None


class DeploymentExecuted(msgspec.Struct, kw_only=True):
    """The run of the active release: queued (202), or with `wait` its result once it
    has finished (200; 202 with `success` null if it has not in time)."""

    run_id: str
    status: str
    revision: int
    release: int | None
    success: bool | None
    error: str | None
    context: dict[str, Any]
    """The input, and each step's outcome (as /pipelines/execute answers it)."""
    position: int | None


class ReleasesOut(msgspec.Struct):
    items: list[ReleaseOut]


class VerifyingOut(msgspec.Struct):
    release: int
    revision: int | None
    run_id: str | None
    deadline: datetime | None
    elapsed_s: float | None


class DeploymentStatusOut(msgspec.Struct):
    status: str
    active_release: int | None
    active_revision: int | None
    verifying: VerifyingOut | None
    recent_releases: list[ReleaseOut]


class DeploymentRolledBackOut(msgspec.Struct):
    release: int
    rolled_back_to: int
    previous_release: int
    position: int | None


class DeploymentRetiredOut(msgspec.Struct):
    id: str
    retired: bool
    version: int
    position: int | None


class DeploymentHistoryOut(msgspec.Struct):
    items: list[HistoryEvent]


class PipelineDeploy(Request):
    """POST /pipelines/{id}:deploy: the pipeline's current revision to `environment`."""

    environment: Environment
    strategy: StrategyIn | None = None
    """A new deployment's strategy (direct by default), or this release's (the
    deployment's own by default)."""
    schedule: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """A cron expression: the job `<pipeline>@<environment>` runs the deployment on it
    (created, or its schedule changed)."""
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    """The schedule's timezone (UTC by default); only with a schedule."""


class ScheduledJobOut(msgspec.Struct, kw_only=True):
    """The job a `:deploy` with a schedule created or changed."""

    id: str
    name: str
    cron_expr: str
    timezone: str
    next_run: datetime | None
    version: int
    position: int | None


class PipelineDeployed(DeploymentWritten, kw_only=True):
    created: bool
    """True: a new deployment (its first release); false: a release of the existing one."""
    job: ScheduledJobOut | None = None
    """With a schedule: the job `<pipeline>@<environment>` that runs the deployment."""
