"""The Job aggregate: a scheduled job, which runs a deployment's active release or a
pipeline's revision at the times of a cron expression in a timezone.

Only what users decide is in the job's stream: its definition (created, replaced by an
update), enabling and disabling (with a reason when Norn disables it: its pipeline was
deleted, its deployment retired), and its delete. What the scheduler does with it —
which times fired, were skipped, missed or refused — is kept out of this stream, so that
firing every minute does not grow it (the scheduler keeps that bookkeeping in a table of
its own, which no projection rebuild touches).

The calendar (whether `cron_expr` and `timezone` are valid, which instants they name) is
application/schedule.py's: the service checks it before the job decides.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.release import check_descriptive, check_json
from domain.text import nul_errors

NAME_MAX = 200
MAX_CATCHUP = 1_000
MAX_JITTER = 3_600

MisfirePolicy = Literal["skip", "run_once", "run_all"]
OverlapPolicy = Literal["allow", "skip", "queue_one", "cancel_previous"]


class JobTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a fire runs: a deployment's active release (with its variables), or a
    pipeline at `revision` (its current one when None, read at each fire)."""

    deployment_id: str | None = None
    pipeline_id: str | None = None
    revision: int | None = None


class JobSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A job's definition, as created and as each update replaces it whole."""

    name: str
    target: JobTarget
    cron_expr: str
    timezone: str = "UTC"
    params: dict[str, Any] = {}
    misfire_policy: MisfirePolicy = "skip"
    max_catchup: int = 10
    """run_all: how many missed times at most are run (the oldest first)."""
    overlap_policy: OverlapPolicy = "skip"
    jitter_seconds: int = 0
    start_at: datetime | None = None
    end_at: datetime | None = None
    description: str = ""
    labels: dict[str, str] = {}


def check_spec(spec: JobSpec) -> None:
    """The rules of a definition that need no calendar: InvalidCommand naming the field."""
    for problem in nul_errors(spec, ""):  # text the store and read models cannot hold
        raise InvalidCommand(problem.message, problem.field)
    name = spec.name.strip()
    if not name or len(name) > NAME_MAX or name != spec.name:
        raise InvalidCommand(
            f"a name of 1 to {NAME_MAX} characters, without leading or trailing spaces",
            "name",
        )
    target = spec.target
    if (target.deployment_id is None) == (target.pipeline_id is None):
        raise InvalidCommand("name either a deployment_id or a pipeline_id", "target")
    if target.revision is not None and (target.pipeline_id is None or target.revision < 1):
        raise InvalidCommand("a revision (1 or more) goes with a pipeline_id", "target.revision")
    for field, value in (
        ("deployment_id", target.deployment_id),
        ("pipeline_id", target.pipeline_id),
    ):
        if value is not None and not _is_uuid(value):
            raise InvalidCommand("not a UUID", f"target.{field}")
    for field, bound in (("start_at", spec.start_at), ("end_at", spec.end_at)):
        if bound is not None and bound.utcoffset() is None:
            raise InvalidCommand("a time with its UTC offset, e.g. 2027-01-01T00:00:00Z", field)
    if spec.start_at and spec.end_at and spec.end_at < spec.start_at:
        raise InvalidCommand("end_at must not be before start_at", "end_at")
    check_json(spec.params, "params")
    if not 1 <= spec.max_catchup <= MAX_CATCHUP:
        raise InvalidCommand(f"max_catchup must be 1 to {MAX_CATCHUP}", "max_catchup")
    if not 0 <= spec.jitter_seconds <= MAX_JITTER:
        raise InvalidCommand(f"jitter_seconds must be 0 to {MAX_JITTER}", "jitter_seconds")
    check_descriptive(spec.labels, spec.description)


def _is_uuid(value: str) -> bool:
    try:
        return str(UUID(value)) == value.lower()
    except ValueError:
        return False


class JobEvent(NornEvent):
    aggregate_type = "job"


class JobCreated(JobEvent, NornCreated):
    spec: JobSpec
    enabled: bool


class JobUpdated(JobEvent):
    spec: JobSpec
    previous_name: str

    def apply(self, aggregate: Job) -> None:
        aggregate.spec = self.spec


class JobEnabled(JobEvent):
    def apply(self, aggregate: Job) -> None:
        aggregate.enabled = True
        aggregate.disabled_reason = None


class JobDisabled(JobEvent):
    reason: str | None = None
    """Why Norn disabled it (its target is gone); None when a user did."""

    def apply(self, aggregate: Job) -> None:
        aggregate.enabled = False
        aggregate.disabled_reason = self.reason


class JobDeleted(JobEvent):
    def apply(self, aggregate: Job) -> None:
        aggregate.deleted = True


class Job(Aggregate):
    def __init__(self, tenant_id: str, spec: JobSpec, enabled: bool) -> None:
        self.tenant_id = tenant_id
        self.spec = spec
        self.enabled = enabled
        self.disabled_reason: str | None = None
        self.deleted = False

    @classmethod
    def create(
        cls, *, job_id: Any, tenant_id: str, spec: JobSpec, enabled: bool, ctx: CommandContext
    ) -> Job:
        check_spec(spec)
        return cls._create(
            JobCreated,
            id=job_id,
            tenant_id=tenant_id,
            spec=spec,
            enabled=enabled,
            **ctx.event_fields(),
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def update(self, spec: JobSpec, ctx: CommandContext) -> bool:
        """Replace the definition; False (nothing recorded) when it is the same."""
        self._require_live()
        check_spec(spec)
        if spec == self.spec:
            return False
        self._trigger(JobUpdated, ctx, spec=spec, previous_name=self.spec.name)
        return True

    def enable(self, ctx: CommandContext) -> bool:
        self._require_live()
        if self.enabled:
            return False
        self._trigger(JobEnabled, ctx)
        return True

    def disable(self, ctx: CommandContext, reason: str | None = None) -> bool:
        """Disabled by a user (no reason), or by Norn with the reason (its target is
        gone): that reason is recorded also on a job a user had disabled already, so
        that enabling it again is understood to be pointless."""
        self._require_live()
        if not self.enabled and (reason is None or reason == self.disabled_reason):
            return False
        self._trigger(JobDisabled, ctx, reason=reason)
        return True

    def delete(self, ctx: CommandContext) -> None:
        self._require_live()
        self._trigger(JobDeleted, ctx)

    def _require_live(self) -> None:
        if self.deleted:
            raise AggregateDeleted(f"job {self.id} was deleted")

    def _trigger(self, event_class: type[JobEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
