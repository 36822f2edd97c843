from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from api.schemas.common import CursorPage, FieldProblem, Request

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class StepIn(Request):
    name: str
    plugin: str
    config: dict[str, Any] = {}
    depends_on: list[str] = []
    retries: int = 0
    """Attempts after a failed one."""
    retry_delay: float = 1.0
    """Seconds before the first retry; doubles per attempt, with jitter."""
    max_delay: float = 60.0
    timeout: float | None = None
    """Seconds an attempt may run."""
    connection: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """A connection of the tenant (GET /api/v1/connections) whose config fills in what
    `config` leaves out; `config` wins field by field."""


class TriggerIn(Request):
    """Start a run of this pipeline when an event of the tenant matches."""

    on: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    """An event type or a glob of one, with or without the version: norn.run.succeeded."""
    where: dict[str, str | int | float | bool] = {}
    """Data fields (or `subject`) the event must have these values in."""
    params: dict[str, Any] = {}
    """The run's parameters."""


class TriggerOut(msgspec.Struct):
    on: str
    where: dict[str, Any]
    params: dict[str, Any]


class PipelineWrite(Request):
    """Body of POST /pipelines and PUT /pipelines/{id}: the full definition."""

    name: Name
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    tags: list[str] = []
    steps: list[StepIn] = []
    namespace: Annotated[str, msgspec.Meta(min_length=1, max_length=63)] | None = None
    """One of the tenant's namespaces, or null for none."""
    timeout: float | None = None
    """Seconds a run may take in all."""
    triggers: list[TriggerIn] = []
    """Events that start a run of this pipeline (README "Event triggers")."""


class RollbackRequest(Request):
    revision: Annotated[int, msgspec.Meta(ge=1)]
    redeploy: bool = False
    """Also release the new revision to every deployment of the pipeline not retired,
    each with its own strategy."""


class CloneRequest(Request):
    name: Name


class StepOut(msgspec.Struct):
    name: str
    plugin: str
    config: dict[str, Any]
    depends_on: list[str]
    retries: int = 0
    retry_delay: float = 1.0
    max_delay: float = 60.0
    timeout: float | None = None
    connection: str | None = None


class ClonedFromOut(msgspec.Struct):
    pipeline_id: str
    revision: int


class PipelineRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    namespace: str | None
    name: str
    description: str
    tags: list[str]
    steps: list[StepOut]
    timeout: float | None = None
    triggers: list[TriggerOut] = []
    revision: int
    version: int
    cloned_from: ClonedFromOut | None
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


class PipelineWritten(PipelineRead, kw_only=True):
    """A command's answer: the state after it, and the event's global position (pass it
    as ?min_position= to read your write)."""

    position: int | None
    changed: bool = True


class PipelinePage(CursorPage, kw_only=True):
    items: list[PipelineRead]


class RedeployedOut(msgspec.Struct, kw_only=True):
    deployment_id: str
    environment: str
    release: int
    outcome: str
    """`active` (direct) or `verifying` (blue-green: its verification run is `run_id`)."""
    run_id: str | None
    position: int | None


class NotRedeployedOut(msgspec.Struct, kw_only=True):
    deployment_id: str
    environment: str
    code: str
    """The error code the same release asked on its own would have answered."""
    reason: str


class RolledBackOut(msgspec.Struct, kw_only=True):
    id: str
    revision: int
    rolled_back_to: int
    previous_revision: int
    version: int
    position: int | None
    redeployed: list[RedeployedOut] = msgspec.field(default_factory=list)
    """With `redeploy`: the deployments the new revision was released to."""
    not_redeployed: list[NotRedeployedOut] = msgspec.field(default_factory=list)
    """With `redeploy`: the deployments it was not, and why."""


class DeletedOut(msgspec.Struct):
    id: str
    deleted: bool
    version: int
    position: int | None


class ChangesOut(msgspec.Struct):
    steps_added: list[str]
    steps_removed: list[str]
    steps_changed: list[str]
    fields_changed: list[str]


class HistoryItem(msgspec.Struct):
    revision: int
    kind: str
    actor: str
    at: datetime
    version: int
    changes: ChangesOut
    rolled_back_to: int | None = None
    cloned_from: ClonedFromOut | None = None


class HistoryOut(msgspec.Struct):
    items: list[HistoryItem]


class RevisionOut(msgspec.Struct):
    pipeline_id: str
    revision: int
    kind: str
    actor: str
    at: datetime
    namespace: str | None
    name: str
    description: str
    tags: list[str]
    steps: list[StepOut]
    triggers: list[TriggerOut] = []


class ValidationOut(msgspec.Struct):
    valid: bool
    errors: list[FieldProblem]
