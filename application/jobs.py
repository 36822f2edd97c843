"""Scheduled job use cases: create, update, enable, disable, delete, run now, preview,
history (README "Scheduled jobs"). Firing on schedule is the scheduler's.

A job's name is unique in its tenant (a name claim saved in the job's append, as for
pipelines), a job takes a unit of `max_jobs`, and its target must exist in the tenant
when the job is written: a deployment not retired, or a pipeline (at `revision`, if
named). The calendar (application/schedule.py) checks `cron_expr`, `timezone` and the
bounds before the job decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from application.authorization import sees
from application.commands import Aggregates
from application.conflicts import retry_on_conflict
from application.deployments import DeploymentService
from application.errors import NotFound, VersionConflict
from application.event_store import NornEventStore
from application.fire_plan import FireState
from application.fires import DueJob
from application.idempotency import earlier_result, first_result, new_id
from application.job_firing import Backfilled, JobFiring
from application.name_claims import move_name, take_name
from application.pipelines import PipelineService
from application.principal import Principal
from application.results import Changed
from application.runs import RunService
from application.schedule import Schedule, ScheduleError, schedule_of
from application.tenants import writable_tenant
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.job import Job, JobSpec, JobTarget, check_spec
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import Pipeline
from domain.run import Run, Trigger

MAX_PREVIEW = 1_000
MAX_BACKFILL = 1_000


def job_scope(tenant_id: str) -> str:
    return f"job:{tenant_id}"


def check_schedule(spec: JobSpec) -> Schedule:
    """The definition's rules (the job's own first), then its calendar: InvalidCommand
    naming the field that breaks one."""
    check_spec(spec)
    schedule = schedule_of(spec)
    try:
        schedule.check()
    except ScheduleError as error:
        raise InvalidCommand(str(error), error.field) from error
    if not schedule.ever_fires():
        raise InvalidCommand(never_fires(spec.cron_expr), "cron_expr")
    return schedule


def never_fires(cron_expr: str) -> str:
    return f"cron_expr {cron_expr!r} never fires: no date matches it"


class JobService:
    def __init__(
        self,
        store: NornEventStore,
        pipelines: PipelineService,
        deployments: DeploymentService,
        runs: RunService,
        clock: Any = None,
    ) -> None:
        self._store = store
        self._pipelines = pipelines
        self._deployments = deployments
        self._runs = runs
        self._ledger = pipelines.ledger
        self._clock = clock or (lambda: datetime.now(UTC))
        self._firing = JobFiring(store, pipelines, runs, self._clock)
        self._jobs = Aggregates(
            store,
            Job,
            "job",
            scope=lambda principal, job: sees(principal, job.tenant_id),
            gone=lambda job: job.deleted,
        )

    def load(self, principal: Principal, job_id: UUID, *, deleted_ok: bool = False) -> Job:
        return self._jobs.load(principal, job_id, deleted_ok=deleted_ok)

    def create(
        self, principal: Principal, spec: JobSpec, ctx: CommandContext, *, enabled: bool = True
    ) -> Changed[Job]:
        job_id = new_id(ctx, "job")
        earlier = earlier_result(self._store, Job, job_id, ctx)
        if earlier is not None:
            return earlier
        tenant = writable_tenant(self._store, principal)
        check_schedule(spec)
        self._check_target(principal, spec)
        scope = job_scope(tenant.tenant_id)
        fresh_claim = True

        def attempt() -> Changed[Job]:
            nonlocal fresh_claim
            job = Job.create(
                job_id=job_id, tenant_id=tenant.tenant_id, spec=spec, enabled=enabled, ctx=ctx
            )
            claim = take_name(
                self._store,
                scope,
                spec.name,
                str(job_id),
                ctx,
                tenant_id=tenant.tenant_id,
                fresh=fresh_claim,
            )
            try:
                with self._ledger.take(tenant, "max_jobs", ctx) as usage:
                    return self._jobs.save(job, claim, usage)
            except VersionConflict:
                first = first_result(self._store, Job, job_id, ctx)
                if first is not None:
                    return first
                fresh_claim = False  # the name was claimed before: read the claim
                raise

        return retry_on_conflict(attempt)

    def update(
        self,
        principal: Principal,
        job_id: UUID,
        spec: JobSpec,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Job]:
        """Replace the definition (PUT); a new name moves the name claim. The job is
        found (or not) before its new definition is judged."""
        writable_tenant(self._store, principal)

        def decide(job: Job) -> list[NameClaim]:
            check_schedule(spec)
            self._check_target(principal, spec)
            old_name = job.name
            if not job.update(spec, ctx):
                return []
            scope = job_scope(job.tenant_id)
            return move_name(
                self._store, scope, old_name, spec.name, str(job.id), ctx, tenant_id=job.tenant_id
            )

        return self._jobs.change(principal, job_id, decide, expected_version, ctx)

    def enable(self, principal: Principal, job_id: UUID, ctx: CommandContext) -> Changed[Job]:
        """Enabled again: the times it missed meanwhile follow its misfire policy."""
        writable_tenant(self._store, principal)

        def decide(job: Job) -> None:
            job.enable(ctx)

        return self._jobs.change(principal, job_id, decide, ctx=ctx)

    def disable(self, principal: Principal, job_id: UUID, ctx: CommandContext) -> Changed[Job]:
        writable_tenant(self._store, principal)

        def decide(job: Job) -> None:
            job.disable(ctx)

        return self._jobs.change(principal, job_id, decide, ctx=ctx)

    def delete(
        self,
        principal: Principal,
        job_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Job]:
        """Soft: the history stays readable; frees the name and the quota unit."""
        earlier = self._jobs.earlier(principal, job_id, ctx)
        if earlier is not None:
            return earlier
        writable_tenant(self._store, principal)

        def attempt() -> Changed[Job]:
            job = self._jobs.load(principal, job_id, expected_version=expected_version)
            job.delete(ctx)
            claim = self._store.find(NameClaim, claim_id(job_scope(job.tenant_id), job.name))
            if claim is not None:
                claim.release(str(job.id), ctx)
            with self._ledger.release(job.tenant_id, "max_jobs", ctx) as usage:
                return self._jobs.save(job, claim, usage, precondition=expected_version is not None)

        return retry_on_conflict(attempt)

    def trigger(
        self,
        principal: Principal,
        job_id: UUID,
        ctx: CommandContext,
        params: dict[str, Any] | None = None,
    ) -> Changed[Run]:
        """Run the job's target now, outside its schedule (a disabled job too): its
        params are the job's, overridden key by key by `params` (a deployment's
        variables under both)."""
        job = self.load(principal, job_id)
        merged = {**job.spec.params, **(params or {})}
        target = job.spec.target
        trigger = Trigger("job", str(job.id))
        if target.deployment_id is not None:
            return self._deployments.execute(
                principal, UUID(target.deployment_id), ctx, merged, via=trigger
            )
        return self._runs.trigger(
            principal,
            UUID(target.pipeline_id or ""),
            params=merged,
            ctx=ctx,
            revision=target.revision,
            trigger=trigger,
        )

    def backfill(
        self,
        principal: Principal,
        job_id: UUID,
        start: datetime,
        end: datetime,
        ctx: CommandContext,
        max_runs: int = 100,
    ) -> Backfilled:
        """One run for each of the job's scheduled times in [start, end] that has not
        run, whatever `enabled` and the overlap policy say: (queued, already run,
        position). More times than `max_runs` in the range is refused, naming it."""
        writable_tenant(self._store, principal)
        if not 1 <= max_runs <= MAX_BACKFILL:
            raise InvalidCommand(f"max_runs must be 1 to {MAX_BACKFILL}", "max_runs")
        for field, value in (("start", start), ("end", end)):
            if value.utcoffset() is None:
                raise InvalidCommand("a time with its UTC offset, e.g. 2027-01-01T00:00:00Z", field)
        if end < start:
            raise InvalidCommand("end must not be before start", "end")
        now = self._clock()
        if end > now:
            # A time still to come is the scheduler's to fire at its time: queued now, it
            # would run early (before its input is there) and count as fired then.
            raise InvalidCommand(
                f"end must not be in the future (now {now.isoformat(timespec='seconds')}):"
                " a backfill queues times that have passed; the scheduler fires the rest",
                "end",
            )
        job = self.load(principal, job_id)
        times = schedule_of(job.spec).fires_between(start, end, max_runs + 1)
        if len(times) > max_runs:
            raise InvalidCommand(
                f"the range holds more than max_runs ({max_runs}) scheduled times: "
                "narrow it or raise max_runs",
                "max_runs",
            )
        due = DueJob(job.id, job.tenant_id, job.version, job.spec, FireState(start))
        return self._firing.backfill(due, times, ctx)

    @staticmethod
    def check_deploy_schedule(cron_expr: str, timezone: str) -> None:
        """A `:deploy` schedule, checked before anything is released: InvalidCommand
        naming the body's field (`schedule` or `timezone`)."""
        schedule = Schedule(cron_expr=cron_expr, timezone=timezone)
        try:
            schedule.check()
        except ScheduleError as error:
            field = "schedule" if error.field == "cron_expr" else error.field
            raise InvalidCommand(str(error), field) from error
        if not schedule.ever_fires():
            raise InvalidCommand(never_fires(cron_expr), "schedule")

    def schedule_deployment(
        self,
        principal: Principal,
        deployment_id: UUID,
        cron_expr: str,
        timezone: str,
        ctx: CommandContext,
    ) -> Changed[Job]:
        """The job `<pipeline>@<environment>` that runs the deployment on `cron_expr`
        (POST /pipelines/{id}:deploy with a schedule): created, or its schedule changed."""
        tenant = writable_tenant(self._store, principal)
        deployment = self._deployments.load(principal, deployment_id)
        pipeline = self._store.find(Pipeline, UUID(deployment.pipeline_id))
        pipeline_name = pipeline.definition.name if pipeline else deployment.pipeline_id
        name = f"{pipeline_name[: 199 - len(deployment.environment)]}@{deployment.environment}"
        claim = self._store.find(NameClaim, claim_id(job_scope(tenant.tenant_id), name))
        target = JobTarget(deployment_id=str(deployment_id))
        if claim is None or claim.holder_id is None:
            spec = JobSpec(name=name, target=target, cron_expr=cron_expr, timezone=timezone)
            return self.create(principal, spec, ctx)
        job = self.load(principal, UUID(claim.holder_id))
        spec = msgspec.structs.replace(
            job.spec, target=target, cron_expr=cron_expr, timezone=timezone
        )
        return self.update(principal, job.id, spec, ctx)

    def preview(
        self, principal: Principal, job_id: UUID, count: int
    ) -> list[tuple[datetime, datetime]]:
        """The next `count` nominal fire times (before jitter): (UTC, local)."""
        if not 1 <= count <= MAX_PREVIEW:
            raise InvalidCommand(f"count must be 1 to {MAX_PREVIEW}", "count")
        schedule = schedule_of(self.load(principal, job_id).spec)
        return [(t, schedule.local(t)) for t in schedule.fires_after(self._clock(), count)]

    def history(self, principal: Principal, job_id: UUID) -> Sequence[Any]:
        """Every event of the job, oldest first; readable after a delete."""
        self.load(principal, job_id, deleted_ok=True)
        return self._store.stream(job_id)

    # --- helpers ------------------------------------------------------------------------

    def _check_target(self, principal: Principal, spec: JobSpec) -> None:
        """The target exists in the principal's tenant and can run: a deployment not
        retired, a pipeline (at the named revision). Else 422 naming the field: the
        request, not the URL, names what is missing (another tenant's is missing too)."""
        target = spec.target
        if target.deployment_id is not None:
            field = "target.deployment_id"
            try:
                deployment = self._deployments.load(principal, _uuid(target.deployment_id, field))
            except NotFound as missing:
                raise InvalidCommand(str(missing), field) from missing
            if deployment.retired:
                raise InvalidCommand(f"deployment {deployment.id} is retired", field)
            return
        field = "target.pipeline_id"
        try:
            pipeline = self._pipelines.load(principal, _uuid(target.pipeline_id or "", field))
        except NotFound as missing:
            raise InvalidCommand(str(missing), field) from missing
        if target.revision is not None and target.revision not in pipeline.revision_versions:
            raise InvalidCommand(f"revision {target.revision} does not exist", "target.revision")


def _uuid(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as error:
        raise InvalidCommand("not a UUID", field) from error
