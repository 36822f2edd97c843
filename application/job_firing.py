"""Carrying out the scheduler's plans (application/fire_plan.py): the runs of due jobs
queued in as few appends as possible, exactly once per (job, scheduled time).

A pass hands over the due jobs it holds (infrastructure/scheduler_role.py locks their
bookkeeping rows, so no other scheduler plans them meanwhile). Their runs are queued
tenant by tenant, each tenant's in one append with its take of the day's runs: the
fast path. Every run's id derives from its job and nominal time, so the event store
refuses a second run for the same time — after a scheduler died between its append and
its bookkeeping, the next one to plan the job finds the run there and counts it fired.
A batch that lost the race for the tenant's usage (another scheduler's append took it
first: none of its runs exists) goes again whole, a few times; any other refusal (a run
that exists, the day's quota) sends its runs one by one through the slow path, where
each is queued, found queued already, or refused by the quota (counted `refused`).

A job whose target is gone (its pipeline deleted, its deployment retired) is disabled,
as an event with the reason, instead of fired. A suspended tenant's jobs are not passed
at all (the role leaves them), so their missed times meet the misfire policy once the
tenant is active again; a suspension that lands during a pass refuses its fires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from application.conflicts import CONFLICT_ATTEMPTS, retry_on_conflict
from application.errors import PermissionDenied, VersionConflict
from application.event_store import NornEventStore
from application.fire_plan import LATE_AFTER, fire_run_id, plan_fires
from application.fires import DueJob, Fire, Outcome, Prepared
from application.pipelines import PipelineService
from application.runs import RunService
from application.schedule import schedule_of
from domain.deployment import Deployment
from domain.errors import Conflict, DomainError, NoActiveRelease, QuotaExceeded
from domain.events import CommandContext
from domain.job import Job, JobTarget
from domain.pipeline import Pipeline
from domain.run import Run, Trigger
from domain.tenant import Tenant, TenantStatus

log = logging.getLogger(__name__)
ACTOR = "system:scheduler"
RACE_ATTEMPTS = 100
"""How often one fire is tried again after losing the race for its tenant's usage (every
scheduler appends runs of the same tenants): each loss means another append went
through, so this many in a row is no longer contention but something wrong."""

Times = list[tuple[datetime, UUID]]
"""(scheduled time, run id) pairs."""
Backfilled = tuple[Times, Times, int | None]
"""A backfill's runs queued, its times already run, and the position of its append."""


class JobFiring:
    def __init__(
        self,
        store: NornEventStore,
        pipelines: PipelineService,
        runs: RunService,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._pipelines = pipelines
        self._runs = runs
        self._clock = clock
        self._seen: dict[UUID, Any] | None = None
        """A pass's pipelines and deployments, each read once (None between passes)."""

    def fire(self, due: list[DueJob]) -> list[Outcome]:
        """Plan each job now and queue its fires, tenant by tenant."""
        return self.queue(self.prepare(due, self._clock()))

    def prepare(self, due: list[DueJob], at: datetime) -> Prepared:
        """Plan each job as of `at` and build its runs, to be queued by `queue` once `at`
        has come: a scheduler prepares a burst before its time (SchedulerRole.run_ahead),
        so that what is left at that time is the append. A pass reads each pipeline and
        deployment once, and the previous runs it needs in one query. Prepared ahead, a
        job whose previous run still runs is planned at `at` instead, when it may have
        ended (its overlap policy decides then, and `cancel_previous` cancels no sooner)."""
        ahead = at > self._clock()
        prepared = Prepared(ahead)
        self._seen = {}
        wanted = [
            UUID(job.last_run_id)
            for job in due
            if job.last_run_id
            and (job.spec.overlap_policy != "allow" or job.state.waiting_for is not None)
        ]
        previous_runs = self._store.current(*wanted) if wanted else {}
        try:
            for job in due:
                previous = previous_runs.get(UUID(job.last_run_id)) if job.last_run_id else None
                if ahead and previous is not None and not previous.finished:
                    prepared.later.append(job)
                    continue
                outcome, job_fires = self._plan(job, at, previous)
                prepared.outcomes.append(outcome)
                if job_fires:
                    prepared.fires.setdefault(job.tenant_id, []).extend(job_fires)
            prepared.targets = {key: seen.version for key, seen in self._seen.items() if seen}
        finally:
            self._seen = None  # fresh reads for the next pass and for backfills
        for tenant_id, batch in prepared.fires.items():
            prepared.events[tenant_id] = [
                e for fire in batch for e in fire.build().collect_events()
            ]
        return prepared

    def queue(self, prepared: Prepared, changed: Collection[UUID] = ()) -> list[Outcome]:
        """Queue what `prepare` built, tenant by tenant, and answer every job's outcome.
        Prepared ahead: the jobs in `changed` (their definition changed since: the next
        look plans them again) are dropped, those whose target changed are planned
        again now, and the runs are stamped now, as queued when their append begins."""
        if prepared.ahead:
            self._refresh(prepared, changed)
        for tenant_id, batch in prepared.fires.items():
            events = prepared.events[tenant_id]
            if not batch:
                continue  # every fire of the tenant was dropped
            if prepared.ahead:
                _stamp(events, self._clock())
            self._queue(tenant_id, batch, events)
        # The deferred jobs after the burst: planning them now must not delay it.
        return prepared.outcomes + (self.fire(prepared.later) if prepared.later else [])

    def _refresh(self, prepared: Prepared, changed: Collection[UUID]) -> None:
        """Drop the jobs of `changed` from a plan made ahead, and move to `later` those
        whose pipeline or deployment has changed since it was read."""
        now = self._store.current(*prepared.targets)
        moved = {
            key
            for key, version in prepared.targets.items()
            if key not in now or now[key].version != version
        }
        again = {
            fire.outcome.job.job_id: fire.outcome.job
            for batch in prepared.fires.values()
            for fire in batch
            if fire.outcome.job.job_id not in changed and moved & fire.targets
        }
        drop = set(changed) | set(again)
        prepared.later = [job for job in prepared.later if job.job_id not in changed]
        prepared.later += again.values()
        prepared.outcomes = [o for o in prepared.outcomes if o.job.job_id not in drop]
        for tenant_id, batch in prepared.fires.items():
            kept = [fire for fire in batch if fire.outcome.job.job_id not in drop]
            if len(kept) < len(batch):
                prepared.fires[tenant_id] = kept
                runs = {fire.run_id for fire in kept}
                events = prepared.events[tenant_id]
                prepared.events[tenant_id] = [e for e in events if e.originator_id in runs]

    # --- planning -----------------------------------------------------------------------

    def _plan(self, job: DueJob, now: datetime, previous: Run | None) -> tuple[Outcome, list[Fire]]:
        """`previous`: the job's last run, when its overlap policy needs to know whether
        it still runs (None otherwise: `allow` fires whatever it does)."""
        schedule = schedule_of(job.spec)
        jitter = schedule.jitter(str(job.job_id))
        active = previous is not None and not previous.finished
        plan = plan_fires(job.spec, schedule, jitter, job.state, now, active)
        outcome = Outcome(job, plan.state, skipped=plan.skipped, missed=plan.missed, more=plan.more)
        outcome.jitter = jitter
        if not plan.fires:
            return outcome, []
        try:
            builds = self._builds(job, plan.fires, outcome)
        except NoActiveRelease:  # no release of the deployment has become active yet
            outcome.refused += len(plan.fires)
            return outcome, []
        except TargetGone as gone:
            outcome.disabled = str(gone)
            outcome.state = replace(job.state, waiting_for=None)  # plan again once enabled
            outcome.skipped = outcome.missed = 0
            self._disable(job.job_id, str(gone))
            return outcome, []
        if plan.cancel_previous and previous is not None and active:
            self._cancel(previous, job, plan.fires[0])
        return outcome, builds

    def _builds(self, job: DueJob, times: Sequence[datetime], outcome: Outcome) -> list[Fire]:
        """How to queue a run of the job's target for each of `times`. TargetGone when
        its pipeline was deleted or its deployment retired; NoActiveRelease when no
        release of its deployment is active."""
        deployment, pipeline = self._target(job.spec.target)
        targets = frozenset({pipeline.id} | ({deployment.id} if deployment else set()))
        params = dict(job.spec.params)
        trigger = Trigger("job", str(job.job_id))
        if deployment is not None:
            release = deployment.active().release  # NoActiveRelease
            revision = deployment.releases[release].revision
            params = deployment.run_params(params)
            trigger = msgspec.structs.replace(
                trigger,
                environment=deployment.environment,
                release=release,
                deployment_id=str(deployment.id),
            )
        else:
            revision = job.spec.target.revision or pipeline.revision
        fires = []
        for scheduled_for in times:
            run_id = fire_run_id(str(job.job_id), scheduled_for)
            ctx = CommandContext(
                ACTOR,
                correlation_id=f"job:{job.job_id}",
                causation_id=f"fire:{job.job_id}:{scheduled_for.isoformat()}",
            )
            build = self._runs.new_run(
                pipeline,
                revision,
                run_id=run_id,
                params=params,
                trigger=msgspec.structs.replace(trigger, scheduled_for=scheduled_for),
                ctx=ctx,
            )
            fires.append(Fire(outcome, scheduled_for, build, run_id, targets))
        return fires

    def _target(self, target: JobTarget) -> tuple[Deployment | None, Pipeline]:
        """The job's deployment (None for a pipeline target) and the pipeline a fire
        runs, as the event store has them; TargetGone when one of them is gone."""
        deployment = None
        pipeline_id = target.pipeline_id or ""
        if target.deployment_id is not None:
            deployment = self._once(Deployment, UUID(target.deployment_id))
            if deployment is None or deployment.retired:
                raise TargetGone(f"deployment {target.deployment_id} was retired")
            pipeline_id = deployment.pipeline_id
        pipeline = self._once(Pipeline, UUID(pipeline_id))
        if pipeline is None or pipeline.deleted:
            raise TargetGone(f"pipeline {pipeline_id} was deleted")
        return deployment, pipeline

    def _once(self, cls: type[Any], aggregate_id: UUID) -> Any:
        """The aggregate as this pass first read it: read once, shared by its jobs."""
        seen = self._seen
        if seen is None:
            return self._store.find(cls, aggregate_id)
        if aggregate_id not in seen:
            seen[aggregate_id] = self._store.find(cls, aggregate_id)
        return seen[aggregate_id]

    # --- queueing -----------------------------------------------------------------------

    def _queue(self, tenant_id: str, batch: list[Fire], events: list[Any]) -> None:
        """The fast path: every fire of the tenant in one append (`events`, their runs
        built); else one by one."""
        tenant = self._store.find(Tenant, UUID(tenant_id))
        if tenant is None or tenant.status != TenantStatus.ACTIVE:
            for fire in batch:
                fire.outcome.refused += 1
            return
        ctx = CommandContext(ACTOR, correlation_id=f"scheduler:{tenant_id}")
        # Built once: an attempt that lost the race for the usage appends the same
        # events again with the usage read afresh (rebuilding hundreds of runs would
        # take long enough to lose the next race too).
        # Encoded once too: an attempt again encodes only its usage (in a burst of one
        # tenant's jobs, every other append of two schedulers loses the race).
        with self._store.encoded_once():
            appended = self._append_with_usage(tenant, ctx, batch, events)
        for fire in batch:
            if appended:
                self._fired(fire)
            else:
                self._queue_one(tenant, fire, ctx)

    def _append_with_usage(
        self, tenant: Tenant, ctx: CommandContext, batch: list[Fire], events: list[Any]
    ) -> bool:
        """One append of the runs' events with the day's take of them; False when refused
        for anything but losing the race for the usage (again and again)."""
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                with self._runs.take_run_of_day(tenant, ctx, amount=len(batch)) as usage:
                    # The usage first: an append that lost the race for it fails at its
                    # first row, not after writing hundreds of runs to roll back.
                    self._store.append(usage, *events)
            except VersionConflict as conflict:
                if conflict.raced and self._lost_usage(conflict, usage.id, batch):
                    continue  # another append took the usage first: none of the runs exists
                return False
            except (QuotaExceeded, PermissionDenied):
                return False
            return True
        return False

    def _lost_usage(self, conflict: VersionConflict, usage_id: UUID, batch: list[Fire]) -> bool:
        """Whether an append of `batch` failed only for its usage, so that appending it
        again with the usage read afresh may go through. The usage is the append's first
        row: when the store names it as the loser, nothing after it was written (the
        other schedulers lose this race often in a burst of one tenant's jobs, and
        asking for hundreds of runs each time cost more than the append). A store that
        cannot tell which aggregate lost (the in-memory one) is asked whether any run of
        the batch exists."""
        if conflict.aggregate_id is not None:
            return conflict.aggregate_id == usage_id
        return not self._store.current(*(f.run_id for f in batch))

    def _queue_one(self, tenant: Tenant, fire: Fire, ctx: CommandContext) -> None:
        def attempt() -> bool:
            if self._store.find(Run, fire.run_id) is not None:
                return False  # queued before: by a pass that died before its bookkeeping
            run = fire.build()
            with self._runs.take_run_of_day(tenant, ctx) as usage:
                self._store.append(run, usage)
            return True

        try:
            # Losing the race for the tenant's usage to another append (the other
            # schedulers' above all) is no refusal: only the quota refuses a fire.
            queued_now = retry_on_conflict(attempt, RACE_ATTEMPTS)
        except QuotaExceeded:
            fire.outcome.refused += 1
            return
        except (VersionConflict, DomainError) as refused:
            log.warning(
                "job %s: fire %s refused: %s", fire.outcome.job.job_id, fire.run_id, refused
            )
            fire.outcome.refused += 1
            return
        self._fired(fire, queued_now)

    def _fired(self, fire: Fire, queued_now: bool = True) -> None:
        """Count a fire: its delay only when queued now (one found queued was counted by
        no one: its pass died before its bookkeeping, so it is counted here, once)."""
        outcome = fire.outcome
        outcome.fired += 1
        if queued_now:
            delay = (self._clock() - fire.scheduled_for).total_seconds() - outcome.jitter
            outcome.late += delay > LATE_AFTER.total_seconds()
            outcome.delays.append(max(0.0, delay))
        if outcome.last_run is None or fire.scheduled_for >= outcome.last_run:
            outcome.last_run, outcome.last_run_id = fire.scheduled_for, str(fire.run_id)

    # --- backfill and targets gone --------------------------------------------------------

    def backfill(self, job: DueJob, times: Sequence[datetime], ctx: CommandContext) -> Backfilled:
        """A run for each of `times` that has none yet — the same run id the scheduler
        gives that time, so a time already run (by the schedule or an earlier backfill)
        is skipped — all in one append with the day's take of them all (QuotaExceeded
        when the day cannot take them all). Answers (queued, already run, position)."""

        def attempt() -> Backfilled:
            ids = [(t, fire_run_id(str(job.job_id), t)) for t in times]
            done = [(t, i) for t, i in ids if self._store.find(Run, i) is not None]
            todo = [t for t, i in ids if (t, i) not in done]
            if not todo:
                return [], done, None
            fires = self._builds(job, todo, Outcome(job, job.state))
            tenant = self._store.find(Tenant, UUID(job.tenant_id))
            assert tenant is not None
            with self._runs.take_run_of_day(tenant, ctx, amount=len(fires)) as usage:
                position = self._store.append(*[fire.build() for fire in fires], usage)
            return [(f.scheduled_for, f.run_id) for f in fires], done, position

        return retry_on_conflict(attempt)  # a run queued meanwhile: look again

    def target_gone(self, job: Job) -> str | None:
        """Why the job's target can no longer run (as the event store says), or None."""
        try:
            self._target(job.spec.target)
        except TargetGone as gone:
            return str(gone)
        return None

    def settle_gone(self, job_ids: Sequence[UUID]) -> list[UUID]:
        """Disable, with the reason, each of the jobs (nominated by a read model) whose
        target the event store says is gone; answers those disabled now."""
        disabled = []
        for job_id in job_ids:
            job = self._store.find(Job, job_id)
            if job is None or job.deleted or not job.enabled:
                continue
            reason = self.target_gone(job)
            if reason is not None:
                self._disable(job_id, reason)
                disabled.append(job_id)
        return disabled

    # --- rare paths ---------------------------------------------------------------------

    def _disable(self, job_id: UUID, reason: str) -> None:
        ctx = CommandContext(ACTOR, correlation_id=f"job:{job_id}")

        def attempt() -> None:
            found = self._store.find(Job, job_id)
            if found is not None and not found.deleted and found.disable(ctx, reason):
                self._store.append(found)

        retry_on_conflict(attempt)
        log.info("job %s disabled: %s", job_id, reason)

    def _cancel(self, previous: Run, job: DueJob, scheduled_for: datetime) -> None:
        ctx = CommandContext(ACTOR, correlation_id=f"job:{job.job_id}")

        def attempt() -> None:
            run = self._store.find(Run, previous.id)
            if run is not None and not run.finished:
                reason = f"job {job.job_id} fired again for {scheduled_for.isoformat()}"
                if run.request_cancel(reason, ctx):
                    self._store.append(run)

        try:
            retry_on_conflict(attempt)
        except DomainError:
            pass  # it finished meanwhile: nothing to cancel


def _stamp(events: list[Any], at: datetime) -> None:
    """Set the time of events built ahead of their append. In place: a frozen event is
    set the way its own __init__ sets it, as a copy of each (dataclasses.replace) cost
    as much as encoding it, at the moment a burst is waiting for its appends. Only the
    prepare that built them holds these events."""
    for event in events:
        object.__setattr__(event, "timestamp", at)


class TargetGone(Conflict):
    """The job's pipeline was deleted or its deployment retired."""
