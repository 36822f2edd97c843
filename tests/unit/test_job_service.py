"""Scheduled jobs through the real services on the in-memory store: create (name claim,
quota, calendar and target checks naming the field), update and rename, enable and
disable, delete, run now with merged params, preview, history, tenant isolation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from application.errors import NotFound, PermissionDenied
from application.jobs import JobService
from domain.errors import AggregateDeleted, InvalidCommand, NameTaken, QuotaExceeded
from domain.job import JobSpec, JobTarget
from tests.support.deployments import CTX, World

NOW = datetime(2027, 3, 13, 12, 0, tzinfo=UTC)


class Jobs(World):
    def __init__(self, tmp_path: Path, **quotas: int) -> None:
        super().__init__(tmp_path, **quotas)
        self.jobs = JobService(
            self.store, self.pipelines, self.deployments, self.runs, clock=lambda: NOW
        )

    def spec(self, name: str = "nightly", **fields: Any) -> JobSpec:
        fields.setdefault("target", JobTarget(pipeline_id=str(self.pipeline_id)))
        return JobSpec(name=name, cron_expr=fields.pop("cron_expr", "0 3 * * *"), **fields)

    def create(self, *args: Any, **fields: Any) -> Any:  # type: ignore[override]
        principal = fields.pop("principal", self.editor)
        enabled = fields.pop("enabled", True)
        return self.jobs.create(principal, self.spec(*args, **fields), CTX, enabled=enabled).state


@pytest.fixture
def world(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path)


def test_a_job_is_saved_with_its_name_claim_and_its_quota_unit_in_one_append(
    world: Jobs,
) -> None:
    made = world.jobs.create(world.editor, world.spec(), CTX)
    assert (made.version, made.state.enabled) == (1, True)
    assert world.appends[-1][1] == [
        "JobCreated",
        "NameClaimTaken",
        "UsageShardTaken",
    ]


def test_names_are_unique_per_tenant_until_the_job_is_deleted(world: Jobs) -> None:
    first = world.create("nightly")
    with pytest.raises(NameTaken):
        world.create("nightly")
    world.jobs.delete(world.editor, first.id, CTX)
    assert world.create("nightly").name == "nightly"


def test_max_jobs_is_taken_on_create_and_given_back_on_delete(tmp_path: Path) -> None:
    world = Jobs(tmp_path, max_jobs=1)
    first = world.create("a")
    with pytest.raises(QuotaExceeded):
        world.create("b")
    world.jobs.delete(world.editor, first.id, CTX)
    assert world.create("b").name == "b"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron_expr": "61 * * * *"}, "cron_expr"),
        ({"cron_expr": "* * * *"}, "cron_expr"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"start_at": datetime(2027, 1, 1)}, "start_at"),
        (
            {
                "start_at": datetime(2027, 2, 1, tzinfo=UTC),
                "end_at": datetime(2027, 1, 1, tzinfo=UTC),
            },
            "end_at",
        ),
        ({"target": JobTarget(pipeline_id=str(uuid4()))}, "target.pipeline_id"),
        ({"target": JobTarget(deployment_id=str(uuid4()))}, "target.deployment_id"),
        ({"target": JobTarget(pipeline_id="not-a-uuid")}, "target.pipeline_id"),
        ({"name": " x"}, "name"),
    ],
)
def test_a_bad_definition_is_refused_naming_the_field(
    world: Jobs, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidCommand) as refused:
        world.create(**fields)
    assert refused.value.field == field
    assert world.appends == [a for a in world.appends if "JobCreated" not in a[1]]


def test_a_revision_that_does_not_exist_is_refused(world: Jobs) -> None:
    target = JobTarget(pipeline_id=str(world.pipeline_id), revision=7)
    with pytest.raises(InvalidCommand) as refused:
        world.create(target=target)
    assert refused.value.field == "target.revision"


def test_a_retired_deployment_is_no_target(world: Jobs) -> None:
    deployment = World.create(world, "staging")
    world.deployments.retire(world.editor, deployment.id, CTX)
    with pytest.raises(InvalidCommand) as refused:
        world.create(target=JobTarget(deployment_id=str(deployment.id)))
    assert refused.value.field == "target.deployment_id"


def test_an_update_replaces_the_definition_and_moves_the_name(world: Jobs) -> None:
    job = world.create("nightly")
    changed = world.jobs.update(
        world.editor, job.id, world.spec("hourly", cron_expr="@hourly"), CTX
    )
    assert (changed.state.name, changed.state.spec.cron_expr, changed.version) == (
        "hourly",
        "@hourly",
        2,
    )
    assert world.create("nightly").name == "nightly"  # the old name is free again
    same = world.jobs.update(world.editor, job.id, world.spec("hourly", cron_expr="@hourly"), CTX)
    assert same.position is None  # nothing to record


def test_enable_and_disable_and_a_deleted_job_refuses_them(world: Jobs) -> None:
    job = world.create()
    assert world.jobs.disable(world.editor, job.id, CTX).state.enabled is False
    assert world.jobs.disable(world.editor, job.id, CTX).position is None
    assert world.jobs.enable(world.editor, job.id, CTX).state.enabled is True
    world.jobs.delete(world.editor, job.id, CTX)
    with pytest.raises(NotFound):
        world.jobs.enable(world.editor, job.id, CTX)
    assert [type(e).__name__ for e in world.jobs.history(world.editor, job.id)] == [
        "JobCreated",
        "JobDisabled",
        "JobEnabled",
        "JobDeleted",
    ]
    with pytest.raises((NotFound, AggregateDeleted)):
        world.jobs.delete(world.editor, job.id, CTX)


def test_run_now_merges_variables_then_job_params_then_the_triggers_own(world: Jobs) -> None:
    deployment = World.create(world, "production", variables={"region": "eu", "mode": "live"})
    job = world.create(
        target=JobTarget(deployment_id=str(deployment.id)),
        params={"mode": "batch", "limit": 10},
        enabled=False,  # a disabled job runs when asked
    )
    run = world.jobs.trigger(world.editor, job.id, CTX, {"limit": 5}).state
    assert run.params == {"region": "eu", "mode": "batch", "limit": 5}
    assert (run.trigger.kind, run.trigger.id) == ("job", str(job.id))
    assert (run.trigger.deployment_id, run.trigger.environment, run.trigger.release) == (
        str(deployment.id),
        "production",
        1,
    )


def test_run_now_of_a_pipeline_target_runs_the_named_revision(world: Jobs) -> None:
    world.revise(*world.pipelines.load(world.editor, world.pipeline_id).definition.steps)
    job = world.create(target=JobTarget(pipeline_id=str(world.pipeline_id), revision=1))
    run = world.jobs.trigger(world.editor, job.id, CTX).state
    assert (run.revision, run.trigger.kind, run.trigger.deployment_id) == (1, "job", None)


def test_preview_lists_the_next_fire_times_in_utc_and_local_time(world: Jobs) -> None:
    job = world.create(cron_expr="0 3 * * *", timezone="America/New_York")
    times = world.jobs.preview(world.editor, job.id, 3)
    # 2027-03-14 is the spring-forward day: 03:00 EDT is 07:00Z; the day before, 08:00Z.
    assert [utc.isoformat() for utc, _ in times] == [
        "2027-03-14T07:00:00+00:00",
        "2027-03-15T07:00:00+00:00",
        "2027-03-16T07:00:00+00:00",
    ]
    assert times[0][1].isoformat() == "2027-03-14T03:00:00-04:00"
    for count in (0, 1001):
        with pytest.raises(InvalidCommand) as refused:
            world.jobs.preview(world.editor, job.id, count)
        assert refused.value.field == "count"


def test_another_tenants_job_is_not_found(world: Jobs) -> None:
    job = world.create()
    other = replace(world.editor, tenant_id=str(uuid4()))
    for command in (
        lambda: world.jobs.update(other, job.id, world.spec(), CTX),
        lambda: world.jobs.disable(other, job.id, CTX),
        lambda: world.jobs.trigger(other, job.id, CTX),
        lambda: world.jobs.preview(other, job.id, 1),
        lambda: world.jobs.history(other, job.id),
    ):
        with pytest.raises(NotFound):
            command()


def test_a_suspended_tenant_reads_its_jobs_and_changes_nothing(world: Jobs) -> None:
    job = world.create()
    suspended = replace(world.editor, tenant_status="suspended")
    for command in (
        lambda: world.jobs.update(suspended, job.id, world.spec("other"), CTX),
        lambda: world.jobs.disable(suspended, job.id, CTX),
        lambda: world.jobs.delete(suspended, job.id, CTX),
        lambda: world.jobs.trigger(suspended, job.id, CTX),
        lambda: world.create("other", principal=suspended),
    ):
        with pytest.raises(PermissionDenied):
            command()
    assert world.jobs.load(suspended, job.id).enabled is True


def test_a_backfill_queues_times_that_have_passed_and_refuses_those_to_come(
    world: Jobs,
) -> None:
    """Times still to come are the scheduler's: a backfill that queued them would run
    them early (before their input is there) and the scheduler would count them fired."""
    job = world.create(cron_expr="0 * * * *")
    start = datetime(2027, 3, 13, 9, 0, tzinfo=UTC)

    queued, already_run, _ = world.jobs.backfill(world.editor, job.id, start, NOW, CTX)
    assert [t for t, _ in queued] == [start.replace(hour=h) for h in (9, 10, 11, 12)]
    assert already_run == []

    later = datetime(2027, 3, 13, 13, 0, tzinfo=UTC)
    with pytest.raises(InvalidCommand) as refused:
        world.jobs.backfill(world.editor, job.id, start, later, CTX)
    assert refused.value.field == "end" and "future" in str(refused.value)
