"""The Run aggregate: one execution of a pipeline revision, from queued to a terminal
status, with the state of each of its steps.

A run pins the definition it executes (copied from the revision when it is queued), so
later revisions or a deleted pipeline never change what it does. Executors record every
state change as an event; an executor's commands carry the attempt it claimed, so an
executor that lost its claim (its run was recovered elsewhere) cannot record anything.

Run:  queued -> running -> succeeded | failed | cancelled | timed_out
      running -> queued (recovered after its executor vanished) | crashed
      queued -> cancelled
Step: pending -> running -> succeeded | failed | retrying -> running ...
      pending -> skipped (an upstream step failed, or the run ended first)
      running | retrying -> cancelled (the run was cancelled or timed out)
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from domain.errors import Conflict, DomainError, InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.pipeline import PipelineDefinition, StepSpec


class RunStatus(StrEnum):
    """str-valued: JSON, stored events (RunCancelled.previous_status) and SQL see the
    plain string, and events stored before the enum decode to it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.TIMED_OUT,
        RunStatus.CRASHED,
    }
)
STEP_TERMINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
TRIGGER_KINDS = ("user", "api_key", "job", "deployment", "retry", "system", "event")
MAX_ERROR = 4000


class ExecutionLost(DomainError):
    """An executor's command for an attempt that is no longer the run's current one: the
    run was recovered by another executor, or has ended."""


class Trigger(msgspec.Struct, frozen=True):
    """Who or what asked for the run: kind (user, api_key, job, deployment, retry,
    system, event) and the id of that user, key, job, deployment, original run or
    triggering event."""

    kind: str
    id: str | None = None
    environment: str | None = None
    """A deployment's run: the environment it runs in."""
    release: int | None = None
    """A deployment's run: the release whose revision it runs (a verification run: the
    release it verifies)."""
    deployment_id: str | None = None
    """A job's run of a deployment: the deployment (`id` is the job's)."""
    scheduled_for: datetime | None = None
    """A job's fire: the nominal time it was scheduled for (without jitter)."""
    depth: int = 0
    """An event's run (kind `event`, `id` the event's): how many triggered runs led to
    it, itself included (domain/event_trigger.py MAX_CHAIN_DEPTH)."""


class StepState(msgspec.Struct):
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    records_in: int = 0
    records_out: int = 0
    reused: bool = False
    """Succeeded by reusing the output of the run this one retries."""


class RunEvent(NornEvent):
    aggregate_type = "run"


class RunQueued(RunEvent, NornCreated):
    pipeline_id: str
    pipeline_name: str
    revision: int
    definition: PipelineDefinition
    params: dict[str, Any]
    trigger: Trigger
    retry_of: str | None = None
    resume_from: str | None = None
    max_attempts: int = 3
    first_of_chain: str | None = None
    """For a retry, the run its chain of retries began with (None in a run that begins
    one, and in retries queued before the field existed)."""


class RunCredentialsShredded(RunEvent):
    """The run's pinned definition lost its credentials held in clear (see
    PipelineCredentialsShredded); a retry of the run then fails on the redacted value."""

    steps: tuple[StepSpec, ...]

    def apply(self, aggregate: Run) -> None:
        aggregate.definition = msgspec.structs.replace(aggregate.definition, steps=self.steps)


class RunStarted(RunEvent):
    executor_id: str
    attempt: int

    def apply(self, aggregate: Run) -> None:
        aggregate.status = RunStatus.RUNNING
        aggregate.attempt = self.attempt
        aggregate.executor_id = self.executor_id
        aggregate.started_at = _at(self)
        aggregate.steps = {name: StepState() for name in aggregate.steps}


class RunStepStarted(RunEvent):
    step: str
    attempt: int

    def apply(self, aggregate: Run) -> None:
        state = aggregate.steps[self.step]
        state.status = StepStatus.RUNNING
        state.attempts += 1
        state.started_at = state.started_at or _at(self)
        state.error = None


class RunStepSucceeded(RunEvent):
    step: str
    records_in: int
    records_out: int
    reused: bool = False

    def apply(self, aggregate: Run) -> None:
        state = aggregate.steps[self.step]
        state.status = StepStatus.SUCCEEDED
        state.finished_at = _at(self)
        state.started_at = state.started_at or state.finished_at
        state.records_in = self.records_in
        state.records_out = self.records_out
        state.reused = self.reused


class RunStepRetrying(RunEvent):
    step: str
    error: str
    retry_in: float

    def apply(self, aggregate: Run) -> None:
        state = aggregate.steps[self.step]
        state.status = StepStatus.RETRYING
        state.error = self.error


class RunStepFailed(RunEvent):
    step: str
    error: str

    def apply(self, aggregate: Run) -> None:
        state = aggregate.steps[self.step]
        state.status = StepStatus.FAILED
        state.error = self.error
        state.finished_at = _at(self)


class RunStepSkipped(RunEvent):
    step: str
    reason: str

    def apply(self, aggregate: Run) -> None:
        state = aggregate.steps[self.step]
        state.status = StepStatus.SKIPPED
        state.error = self.reason


class RunEnded(RunEvent):
    """Base of the events that end a run. Each carries what a consumer outside Norn needs
    to act on the outcome without calling back (README "Consuming events from NATS"):
    which pipeline and revision ran, for which deployment or job, how it ended, how long
    it ran and why it failed. Defaults: events stored before these fields existed."""

    ends_as: ClassVar[RunStatus]
    pipeline_id: str = ""
    pipeline_name: str = ""
    revision: int = 0
    trigger: str = ""
    """What queued the run: the trigger kind (user, api_key, job, deployment, retry, ...)."""
    deployment_id: str | None = None
    job_id: str | None = None
    environment: str | None = None
    status: str = ""
    attempt: int = 0
    started_at: datetime | None = None
    duration_seconds: float | None = None
    """From the start of the attempt that ended to the end; None if it never started."""
    message: str | None = None
    """Why it did not succeed (the run's `error`), None when it succeeded."""


class RunSucceeded(RunEnded):
    ends_as = RunStatus.SUCCEEDED

    def apply(self, aggregate: Run) -> None:
        aggregate._finish(RunStatus.SUCCEEDED, _at(self), None)


class RunFailed(RunEnded):
    ends_as = RunStatus.FAILED
    error: str = ""
    failed_step: str | None = None

    def apply(self, aggregate: Run) -> None:
        aggregate._finish(RunStatus.FAILED, _at(self), self.error)


class RunCancelRequested(RunEvent):
    reason: str = ""

    def apply(self, aggregate: Run) -> None:
        aggregate.cancel_requested = True
        aggregate.cancel_reason = self.reason


class RunRetried(RunEvent):
    """The run was retried: `retry_id` is the new run (whose RunQueued names this one as
    `retry_of`), appended with it."""

    retry_id: str

    def apply(self, aggregate: Run) -> None:
        aggregate.retried_by = self.retry_id


class RunCancelled(RunEnded):
    ends_as = RunStatus.CANCELLED
    reason: str = ""
    previous_status: RunStatus = RunStatus.RUNNING

    def apply(self, aggregate: Run) -> None:
        aggregate._finish(RunStatus.CANCELLED, _at(self), self.reason or "cancelled")


class RunTimedOut(RunEnded):
    ends_as = RunStatus.TIMED_OUT
    timeout: float = 0.0

    def apply(self, aggregate: Run) -> None:
        aggregate._finish(RunStatus.TIMED_OUT, _at(self), f"run timed out after {self.timeout:g}s")


class RunRequeued(RunEvent):
    """Queued again for another executor: recovered (its executor stopped
    heart-beating), or `released` by an executor that shut down (not a lost attempt)."""

    reason: str
    released: bool = False

    def apply(self, aggregate: Run) -> None:
        if self.released:
            aggregate.released_attempts += 1
        aggregate.status = RunStatus.QUEUED
        aggregate.executor_id = None
        aggregate.steps = {name: StepState() for name in aggregate.steps}


class RunCrashed(RunEnded):
    ends_as = RunStatus.CRASHED
    reason: str = ""

    def apply(self, aggregate: Run) -> None:
        aggregate._finish(RunStatus.CRASHED, _at(self), self.reason)


def _at(event: NornEvent) -> datetime:
    return event.timestamp


class Run(Aggregate):
    retried_by: str | None = None
    """The latest retry of this run (RunRetried); on the class, so that runs from before
    the event existed have it too."""
    first_of_chain: str | None = None
    """For a retry, the run its chain began with (RunQueued); on the class too."""

    def __init__(
        self,
        tenant_id: str,
        pipeline_id: str,
        pipeline_name: str,
        revision: int,
        definition: PipelineDefinition,
        params: dict[str, Any],
        trigger: Trigger,
        retry_of: str | None,
        resume_from: str | None,
        max_attempts: int,
        correlation_id: str,
        first_of_chain: str | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.correlation_id = correlation_id
        """The request chain that queued the run; the executor's events continue it."""
        self.pipeline_id = pipeline_id
        self.pipeline_name = pipeline_name
        self.revision = revision
        self.definition = definition
        self.params = params
        self.trigger = trigger
        self.retry_of = retry_of
        self.first_of_chain = first_of_chain
        self.resume_from = resume_from
        self.max_attempts = max_attempts
        self.status: RunStatus = RunStatus.QUEUED
        self.attempt = 0
        self.executor_id: str | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.error: str | None = None
        self.cancel_requested = False
        self.cancel_reason = ""
        self.released_attempts = 0
        """Attempts handed back by an executor that shut down: not lost, so they do not
        count against max_attempts."""
        self.steps: dict[str, StepState] = {s.name: StepState() for s in definition.steps}

    @classmethod
    def queue(
        cls,
        *,
        run_id: UUID,
        tenant_id: str,
        pipeline_id: str,
        pipeline_name: str,
        revision: int,
        definition: PipelineDefinition,
        params: dict[str, Any],
        trigger: Trigger,
        ctx: CommandContext,
        retry_of: str | None = None,
        resume_from: str | None = None,
        max_attempts: int = 3,
        first_of_chain: str | None = None,
    ) -> Run:
        if trigger.kind not in TRIGGER_KINDS:
            raise InvalidCommand(f"trigger must be one of {', '.join(TRIGGER_KINDS)}")
        if resume_from is not None and resume_from not in {s.name for s in definition.steps}:
            raise InvalidCommand(f"no step {resume_from!r} to resume from", "from_step")
        if not 1 <= max_attempts <= 10:
            raise InvalidCommand("max_attempts must be between 1 and 10", "max_attempts")
        return cls._create(
            RunQueued,
            id=run_id,
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            pipeline_name=pipeline_name,
            revision=revision,
            definition=definition,
            params=params,
            trigger=trigger,
            retry_of=retry_of,
            resume_from=resume_from,
            max_attempts=max_attempts,
            first_of_chain=first_of_chain,
            **ctx.event_fields(),
        )

    # --- queries ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def dependencies(self, step: str) -> tuple[str, ...]:
        return next(s.depends_on for s in self.definition.steps if s.name == step)

    def ready_steps(self) -> list[str]:
        """Steps that may start now: pending (or waiting to retry is the executor's
        timer), every dependency succeeded; in definition order."""
        return [
            s.name
            for s in self.definition.steps
            if self.steps[s.name].status == StepStatus.PENDING
            and all(self.steps[d].status == StepStatus.SUCCEEDED for d in s.depends_on)
        ]

    def all_steps_finished(self) -> bool:
        return all(state.status in STEP_TERMINAL for state in self.steps.values())

    def first_failure(self) -> tuple[str, str] | None:
        for spec in self.definition.steps:
            state = self.steps[spec.name]
            if state.status == StepStatus.FAILED:
                return spec.name, state.error or "failed"
        return None

    # --- commands -----------------------------------------------------------------------------

    def start(self, executor_id: str, ctx: CommandContext) -> int:
        """Claim the run for an executor; returns the attempt number it now owns."""
        if self.status != RunStatus.QUEUED:
            raise Conflict(f"run is {self.status}, not queued")
        if self.cancel_requested:
            raise Conflict("run is being cancelled")
        self._trigger(RunStarted, ctx, executor_id=executor_id, attempt=self.attempt + 1)
        return self.attempt

    def start_step(self, step: str, attempt: int, ctx: CommandContext) -> None:
        self._require_attempt(attempt)
        state = self._step(step)
        if state.status not in (StepStatus.PENDING, StepStatus.RETRYING):
            raise Conflict(f"step {step} is {state.status}; it cannot start")
        if any(self.steps[d].status != StepStatus.SUCCEEDED for d in self.dependencies(step)):
            raise InvalidCommand(f"step {step} has dependencies that have not succeeded")
        self._trigger(RunStepStarted, ctx, step=step, attempt=attempt)

    def step_succeeded(
        self,
        step: str,
        attempt: int,
        records_in: int,
        records_out: int,
        ctx: CommandContext,
        *,
        reused: bool = False,
    ) -> None:
        self._require_attempt(attempt)
        state = self._step(step)
        if state.status != StepStatus.RUNNING and not (
            reused and state.status == StepStatus.PENDING
        ):
            raise Conflict(f"step {step} is {state.status}; it cannot succeed")
        self._trigger(
            RunStepSucceeded,
            ctx,
            step=step,
            records_in=records_in,
            records_out=records_out,
            reused=reused,
        )

    def step_failed(
        self, step: str, attempt: int, error: str, retry_in: float | None, ctx: CommandContext
    ) -> bool:
        """Record a failed attempt. With `retry_in` (seconds) the step waits to retry;
        without, it has failed for good and every step downstream of it is skipped.
        Returns whether it will retry."""
        self._require_attempt(attempt)
        state = self._step(step)
        if state.status != StepStatus.RUNNING:
            raise Conflict(f"step {step} is {state.status}; it cannot fail")
        error = error[:MAX_ERROR] or "failed"
        if retry_in is not None:
            self._trigger(RunStepRetrying, ctx, step=step, error=error, retry_in=retry_in)
            return True
        self._trigger(RunStepFailed, ctx, step=step, error=error)
        for downstream in self._downstream_of(step):
            if self.steps[downstream].status == StepStatus.PENDING:
                self._trigger(
                    RunStepSkipped, ctx, step=downstream, reason=f"upstream step {step} failed"
                )
        return False

    def finish(self, attempt: int, ctx: CommandContext) -> None:
        """Every step has finished: the run succeeded, or failed with its first failed
        step's error."""
        self._require_attempt(attempt)
        if not self.all_steps_finished():
            raise Conflict("steps are still pending or running")
        failure = self.first_failure()
        if failure is None:
            self._end(RunSucceeded, ctx, None)
        else:
            step, error = failure
            message = f"step {step} failed: {error}"
            self._end(RunFailed, ctx, message, error=message, failed_step=step)

    def record_retry(self, retry_id: UUID, ctx: CommandContext) -> None:
        """A retry of this finished run was queued (application/runs.py decides when)."""
        if not self.finished:
            raise Conflict(f"run is {self.status}; only a finished run can be retried")
        self._trigger(RunRetried, ctx, retry_id=str(retry_id))

    def request_cancel(self, reason: str, ctx: CommandContext) -> bool:
        """Cancel: a queued run at once; a running one is asked to stop (its executor
        records RunCancelled). False when a cancel was already requested."""
        if self.finished:
            raise Conflict(f"run already {self.status}")
        if self.status == RunStatus.QUEUED:
            self._end(
                RunCancelled,
                ctx,
                reason or "cancelled",
                reason=reason,
                previous_status=RunStatus.QUEUED,
            )
            return True
        if self.cancel_requested:
            return False
        self._trigger(RunCancelRequested, ctx, reason=reason)
        return True

    def cancelled(self, attempt: int, ctx: CommandContext) -> None:
        self._require_attempt(attempt)
        self._cancel_running(ctx)

    def timed_out(self, attempt: int, timeout: float, ctx: CommandContext) -> None:
        self._require_attempt(attempt)
        self._end(RunTimedOut, ctx, f"run timed out after {timeout:g}s", timeout=timeout)

    def recover(self, attempt: int, reason: str, ctx: CommandContext) -> RunStatus:
        """The executor of `attempt` vanished: queue the run again while attempts are
        left (and it is not being cancelled), else mark it crashed. Returns the new
        status."""
        self._require_attempt(attempt)
        lost = self.attempt - self.released_attempts
        if self.cancel_requested:
            self._cancel_running(ctx)
        elif lost < self.max_attempts:
            self._trigger(RunRequeued, ctx, reason=reason)
        else:
            gave_up = f"{reason}; gave up after {lost} attempt(s)"
            self._end(RunCrashed, ctx, gave_up, reason=gave_up)
        return self.status

    def release(self, attempt: int, reason: str, ctx: CommandContext) -> RunStatus:
        """The executor of `attempt` stops (shutting down): queue the run again for
        another executor. Not a failure, so it does not count against max_attempts. A
        run being cancelled is cancelled instead: queued again, it would wait forever
        (a run being cancelled is never claimed). Returns the new status."""
        self._require_attempt(attempt)
        if self.cancel_requested:
            self._cancel_running(ctx)
        else:
            self._trigger(RunRequeued, ctx, reason=reason, released=True)
        return self.status

    # --- helpers ------------------------------------------------------------------------

    def _cancel_running(self, ctx: CommandContext) -> None:
        """Honour the cancel request, keeping its reason (who asked) as the run's error."""
        reason = self.cancel_reason or "cancelled"
        self._end(RunCancelled, ctx, reason, reason=reason, previous_status=RunStatus.RUNNING)

    def _finish(self, status: RunStatus, at: datetime, error: str | None) -> None:
        self.status = status
        self.finished_at = at
        self.error = error
        for state in self.steps.values():
            if state.status in (StepStatus.RUNNING, StepStatus.RETRYING):
                state.status = StepStatus.CANCELLED
                state.finished_at = at
            elif state.status == StepStatus.PENDING:
                state.status = StepStatus.SKIPPED

    def _downstream_of(self, step: str) -> list[str]:
        """Every step that depends on `step`, directly or not, in definition order."""
        found: set[str] = {step}
        changed = True
        while changed:
            changed = False
            for spec in self.definition.steps:
                if spec.name not in found and found.intersection(spec.depends_on):
                    found.add(spec.name)
                    changed = True
        return [s.name for s in self.definition.steps if s.name in found and s.name != step]

    def _require_attempt(self, attempt: int) -> None:
        if self.status != RunStatus.RUNNING or attempt != self.attempt:
            raise ExecutionLost(
                f"run {self.id} is {self.status} at attempt {self.attempt}; "
                f"attempt {attempt} no longer owns it"
            )

    def _step(self, step: str) -> StepState:
        if step not in self.steps:
            raise InvalidCommand(f"no step {step!r} in this run")
        return self.steps[step]

    def _end(
        self, event_class: type[RunEnded], ctx: CommandContext, message: str | None, **fields: Any
    ) -> None:
        """Trigger an ending event with the run's outcome summary (RunEnded)."""
        at = event_class.create_timestamp()
        started = self.started_at if self.status == RunStatus.RUNNING else None
        self._trigger(
            event_class,
            ctx,
            timestamp=at,
            pipeline_id=self.pipeline_id,
            pipeline_name=self.pipeline_name,
            revision=self.revision,
            trigger=self.trigger.kind,
            deployment_id=self.trigger.deployment_id
            or (self.trigger.id if self.trigger.kind == "deployment" else None),
            job_id=self.trigger.id if self.trigger.kind == "job" else None,
            environment=self.trigger.environment,
            status=event_class.ends_as.value,
            attempt=self.attempt,
            started_at=started,
            duration_seconds=(at - started).total_seconds() if started else None,
            message=message,
            **fields,
        )

    def shred_credentials(self, steps: tuple[StepSpec, ...], ctx: CommandContext) -> None:
        self._trigger(RunCredentialsShredded, ctx, steps=steps)

    def _trigger(self, event_class: type[RunEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
