"""Firing due jobs through the real services on the in-memory store, with a clock the test
moves: runs queued with ids derived from (job, time), one append per tenant, exactly once
even when a pass is carried out twice (a scheduler that died before its bookkeeping),
targets that are gone disabling the job, quotas refusing fires, params merged."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.fire_plan import FireState, fire_run_id
from application.fires import DueJob
from application.job_firing import JobFiring
from application.jobs import JobService
from application.quotas import UsageLedger
from application.runs import RunService
from domain.job import Job, JobSpec, JobTarget
from domain.run import Run, RunQueued
from domain.tenant import Tenant
from tests.support.deployments import CTX, World
from tests.support.runs import step

CREATED = datetime(2027, 3, 10, 12, 0, 0, tzinfo=UTC)


class Firing(World):
    def __init__(self, tmp_path: Path, **quotas: int) -> None:
        super().__init__(tmp_path, **quotas)
        self.clock = CREATED
        self.jobs = JobService(self.store, self.pipelines, self.deployments, self.runs)
        self.firing = JobFiring(self.store, self.pipelines, self.runs, clock=lambda: self.clock)

    def job(self, cron_expr: str = "* * * * *", **fields: Any) -> Job:
        fields.setdefault("target", JobTarget(pipeline_id=str(self.pipeline_id)))
        spec = JobSpec(name=fields.pop("name", "every-minute"), cron_expr=cron_expr, **fields)
        return self.jobs.create(self.editor, spec, CTX).state

    def due(self, job: Job, cursor: datetime = CREATED, last_run_id: str | None = None) -> DueJob:
        found = self.store.load(Job, job.id, "job")
        return DueJob(
            job_id=job.id,
            tenant_id=found.tenant_id,
            version=found.version,
            spec=found.spec,
            state=FireState(cursor),
            last_run_id=last_run_id,
        )

    def queued(self) -> list[str]:
        return [names for _, names in self.appends if "RunQueued" in names][-1]


@pytest.fixture
def world(tmp_path: Path) -> Firing:
    return Firing(tmp_path)


def test_a_due_time_queues_a_run_whose_id_comes_from_the_job_and_the_time(
    world: Firing,
) -> None:
    job = world.job()
    world.clock = CREATED + timedelta(minutes=1, seconds=0.4)
    [outcome] = world.firing.fire([world.due(job)])
    at = CREATED + timedelta(minutes=1)
    assert (outcome.fired, outcome.late, outcome.missed) == (1, 0, 0)
    assert outcome.state.cursor == at and outcome.last_run == at
    run = world.run(fire_run_id(str(job.id), at))
    assert (run.trigger.kind, run.trigger.id, run.trigger.scheduled_for) == ("job", str(job.id), at)
    assert outcome.last_run_id == str(run.id)
    assert outcome.delays == [pytest.approx(0.4)]


def test_a_pass_carried_out_twice_queues_nothing_twice(world: Firing) -> None:
    """The first scheduler appended and died before its bookkeeping: the next plans the
    job from the same cursor, finds the run and counts it fired, once."""
    job = world.job()
    world.clock = CREATED + timedelta(minutes=1, seconds=1)
    world.firing.fire([world.due(job)])
    appends = len(world.appends)
    [again] = world.firing.fire([world.due(job)])
    assert (again.fired, again.refused) == (1, 0)
    assert again.delays == []  # counted by no one before, but not delayed now
    assert len(world.appends) == appends  # nothing appended the second time
    runs = [e for e in world.store.stream(fire_run_id(str(job.id), again.last_run or CREATED))]
    assert len(runs) == 1


def test_one_append_for_every_due_job_of_a_tenant(world: Firing) -> None:
    jobs = [world.job(name=f"job-{i}") for i in range(5)]
    world.clock = CREATED + timedelta(minutes=1)
    before = len(world.appends)
    outcomes = world.firing.fire([world.due(job) for job in jobs])
    assert [o.fired for o in outcomes] == [1] * 5
    assert len(world.appends) == before + 1
    assert world.appends[-1][1].count("RunQueued") == 5


def test_the_days_quota_refuses_fires_past_it(tmp_path: Path) -> None:
    world = Firing(tmp_path, max_runs_per_day=2)
    jobs = [world.job(name=f"job-{i}") for i in range(3)]
    world.clock = CREATED + timedelta(minutes=1)
    outcomes = world.firing.fire([world.due(job) for job in jobs])
    assert sorted(o.fired for o in outcomes) == [0, 1, 1]
    assert sum(o.refused for o in outcomes) == 1
    assert all(o.state.cursor == CREATED + timedelta(minutes=1) for o in outcomes)  # dealt with


def test_a_deployment_target_runs_its_active_release_with_variables_under_job_params(
    world: Firing,
) -> None:
    deployment = World.create(world, "production", variables={"region": "eu", "mode": "live"})
    job = world.job(target=JobTarget(deployment_id=str(deployment.id)), params={"mode": "batch"})
    world.clock = CREATED + timedelta(minutes=1)
    [outcome] = world.firing.fire([world.due(job)])
    run = world.run(UUID(outcome.last_run_id or ""))
    assert run.params == {"region": "eu", "mode": "batch"}
    assert (run.trigger.deployment_id, run.trigger.environment, run.trigger.release) == (
        str(deployment.id),
        "production",
        1,
    )


def test_a_retired_deployment_or_a_deleted_pipeline_disables_the_job(world: Firing) -> None:
    deployment = World.create(world, "production")
    on_deployment = world.job(name="d", target=JobTarget(deployment_id=str(deployment.id)))
    world.deployments.retire(world.editor, deployment.id, CTX)
    other = world.pipeline(
        "other", *world.pipelines.load(world.editor, world.pipeline_id).definition.steps
    )
    on_pipeline = world.job(name="p", target=JobTarget(pipeline_id=str(other)))
    world.pipelines.delete(world.editor, other, CTX)
    world.clock = CREATED + timedelta(minutes=1)
    outcomes = world.firing.fire([world.due(on_deployment), world.due(on_pipeline)])
    assert [o.fired for o in outcomes] == [0, 0]
    assert [o.disabled for o in outcomes] == [
        f"deployment {deployment.id} was retired",
        f"pipeline {other} was deleted",
    ]
    for job in (on_deployment, on_pipeline):
        stored = world.store.load(Job, job.id, "job")
        assert stored.enabled is False and "was" in (stored.disabled_reason or "")


def test_overlap_skip_counts_while_the_previous_run_is_active(world: Firing) -> None:
    job = world.job()
    world.clock = CREATED + timedelta(minutes=1)
    [first] = world.firing.fire([world.due(job)])
    world.clock = CREATED + timedelta(minutes=2)
    due = replace(world.due(job, first.state.cursor), last_run_id=first.last_run_id)
    [second] = world.firing.fire([due])
    assert (second.fired, second.skipped) == (0, 1)  # the first run is still queued


def test_cancel_previous_asks_the_active_run_to_stop_and_fires(world: Firing) -> None:
    job = world.job(overlap_policy="cancel_previous")
    world.clock = CREATED + timedelta(minutes=1)
    [first] = world.firing.fire([world.due(job)])
    world.clock = CREATED + timedelta(minutes=2)
    due = replace(world.due(job, first.state.cursor), last_run_id=first.last_run_id)
    [second] = world.firing.fire([due])
    assert second.fired == 1
    assert world.run(UUID(first.last_run_id or "")).status == "cancelled"  # it was queued


def test_a_suspended_tenant_refuses_the_fires_of_a_pass_that_raced_it(world: Firing) -> None:
    job = world.job()
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    tenant.suspend("invoice unpaid", CTX)
    world.store.append(tenant)
    world.clock = CREATED + timedelta(minutes=1)
    [outcome] = world.firing.fire([world.due(job)])
    assert (outcome.fired, outcome.refused) == (0, 1)
    assert world.store.find(Run, fire_run_id(str(job.id), CREATED + timedelta(minutes=1))) is None


def test_losing_the_race_for_the_days_usage_again_and_again_refuses_no_fire(
    world: Firing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other schedulers queue the same tenant's runs: each of their appends takes the
    day's usage, and an append of ours that read it before conflicts. Eight in a row
    (measured with two schedulers and 2,000 jobs: a few fires a minute dropped as
    `refused`) only delay the fire: the quota alone refuses one."""
    job = world.job()
    world.clock = CREATED + timedelta(minutes=1)
    other = RunService(
        world.store, world.pipelines, world.usage, ledger=UsageLedger(world.store, world.usage)
    )
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    append = world.store.append
    raced = 0

    def after_another_take(*aggregates: Any, **options: Any) -> int | None:
        nonlocal raced
        if raced < 8 and any(isinstance(a, Run | RunQueued) for a in aggregates):
            raced += 1
            with other.take_run_of_day(tenant, CTX) as usage:  # another scheduler's append
                append(usage)
        return append(*aggregates, **options)

    monkeypatch.setattr(world.store, "append", after_another_take)
    [outcome] = world.firing.fire([world.due(job)])
    assert raced == 8
    assert (outcome.fired, outcome.refused) == (1, 0)
    assert world.store.find(Run, fire_run_id(str(job.id), CREATED + timedelta(minutes=1)))


def test_a_batch_that_loses_the_race_for_the_usage_is_appended_again_whole(
    world: Firing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another scheduler's append took the day's usage between our read and our append:
    none of the batch's runs exists, so the batch goes again in one append rather than
    one run per append (which, with two schedulers of one tenant, made every burst
    crawl)."""
    jobs = [world.job(name=f"job-{i}") for i in range(5)]
    world.clock = CREATED + timedelta(minutes=1)
    other = RunService(
        world.store, world.pipelines, world.usage, ledger=UsageLedger(world.store, world.usage)
    )
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    append = world.store.append
    raced = 0

    def after_another_take(*aggregates: Any, **options: Any) -> int | None:
        nonlocal raced
        if raced < 2 and any(isinstance(a, Run | RunQueued) for a in aggregates):
            raced += 1
            with other.take_run_of_day(tenant, CTX) as usage:
                append(usage)
        return append(*aggregates, **options)

    monkeypatch.setattr(world.store, "append", after_another_take)
    encode = world.store.mapper._encode  # type: ignore[attr-defined]
    encoded: list[str] = []

    def counted(event: Any) -> Any:
        encoded.append(type(event).__name__)
        return encode(event)

    monkeypatch.setattr(world.store.mapper, "_encode", counted)
    before = len(world.appends)
    outcomes = world.firing.fire([world.due(job) for job in jobs])
    assert raced == 2 and [o.fired for o in outcomes] == [1] * 5
    queued = [names for _, names in world.appends[before:] if "RunQueued" in names]
    assert [names.count("RunQueued") for names in queued] == [5]
    # Three attempts, the runs encoded in the first only (each usage afresh).
    assert encoded.count("RunQueued") == 5


def test_runs_prepared_before_their_time_are_queued_and_stamped_when_queued(
    world: Firing,
) -> None:
    """A scheduler plans and builds a burst before its time; nothing is queued until it
    comes, and each run is stamped with the moment its append began."""
    job = world.job()
    at = CREATED + timedelta(minutes=1)
    world.clock = at - timedelta(seconds=0.5)
    prepared = world.firing.prepare([world.due(job)], at)
    run_id = fire_run_id(str(job.id), at)
    assert prepared.ahead and world.store.find(Run, run_id) is None
    world.clock = at + timedelta(seconds=0.2)
    [outcome] = world.firing.queue(prepared)
    [queued, *_] = world.store.stream(run_id)
    assert isinstance(queued, RunQueued) and queued.timestamp == world.clock
    assert (outcome.fired, outcome.state.cursor, outcome.delays) == (1, at, [pytest.approx(0.2)])


def test_prepared_ahead_a_job_whose_previous_run_still_runs_is_planned_when_queued(
    world: Firing,
) -> None:
    """Its overlap policy decides at the fire's time: the previous run may end before."""
    skip = world.job()
    cancel = world.job(name="cancels", overlap_policy="cancel_previous")
    world.clock = CREATED + timedelta(minutes=1)
    first = {o.job.job_id: o for o in world.firing.fire([world.due(skip), world.due(cancel)])}
    at = CREATED + timedelta(minutes=2)
    world.clock = at - timedelta(seconds=0.5)
    due = [
        replace(world.due(j, first[j.id].state.cursor), last_run_id=first[j.id].last_run_id)
        for j in (skip, cancel)
    ]
    prepared = world.firing.prepare(due, at)
    assert [job.job_id for job in prepared.later] == [skip.id, cancel.id]
    cancelled_run = world.run(UUID(first[cancel.id].last_run_id or ""))
    assert cancelled_run.status == "queued"  # not cancelled before the fire's time
    previous = world.run(UUID(first[skip.id].last_run_id or ""))
    previous.request_cancel("ended meanwhile", CTX)
    world.store.append(previous)
    world.clock = at + timedelta(seconds=0.1)
    outcomes = {o.job.job_id: o for o in world.firing.queue(prepared)}
    assert (outcomes[skip.id].fired, outcomes[skip.id].skipped) == (1, 0)
    assert outcomes[cancel.id].fired == 1
    assert world.run(cancelled_run.id).status == "cancelled"


def test_prepared_ahead_a_changed_job_is_dropped_and_a_revised_target_read_again(
    world: Firing,
) -> None:
    """A job changed since it was planned is left to the next look (no outcome: its
    bookkeeping stays as it was); a job whose pipeline was revised meanwhile runs the
    revision of the fire's time."""
    kept, changed = world.job(), world.job(name="changed")
    at = CREATED + timedelta(minutes=1)
    world.clock = at - timedelta(seconds=0.5)
    prepared = world.firing.prepare([world.due(kept), world.due(changed)], at)
    world.revise(step("e", "Test.emit"), step("f", "Test.emit"))
    world.clock = at
    [outcome] = world.firing.queue(prepared, changed={changed.id})
    assert outcome.job.job_id == kept.id and outcome.fired == 1
    assert world.store.find(Run, fire_run_id(str(changed.id), at)) is None
    assert world.run(fire_run_id(str(kept.id), at)).revision == 2
