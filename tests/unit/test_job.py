"""The Job aggregate (domain/job.py): given its events, a command records the events it
must, nothing when it changes nothing, or is refused naming the field and records
nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext
from domain.job import Job, JobSpec, JobTarget

CTX = CommandContext("user:u1", "corr-1")
PIPELINE = str(uuid4())
LATER = datetime(2027, 2, 1, tzinfo=UTC)
NIGHTLY = JobSpec(name="nightly", target=JobTarget(pipeline_id=PIPELINE), cron_expr="0 3 * * *")


def job(spec: JobSpec = NIGHTLY, enabled: bool = True) -> Job:
    """A job whose creation is already saved (no pending events)."""
    made = Job.create(job_id=uuid4(), tenant_id="t1", spec=spec, enabled=enabled, ctx=CTX)
    made.collect_events()
    return made


def recorded(aggregate: Job) -> list[str]:
    return [type(event).__name__ for event in aggregate.collect_events()]


def test_a_created_job_holds_its_definition_and_records_who_made_it() -> None:
    made = Job.create(job_id=uuid4(), tenant_id="t1", spec=NIGHTLY, enabled=False, ctx=CTX)
    [created] = made.collect_events()
    assert type(created).__name__ == "JobCreated"
    assert (created.actor, created.tenant_id, created.spec) == ("user:u1", "t1", NIGHTLY)
    assert (made.name, made.enabled, made.deleted) == ("nightly", False, False)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": " padded "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"target": JobTarget()}, "target"),
        ({"target": JobTarget(pipeline_id=PIPELINE, deployment_id=PIPELINE)}, "target"),
        ({"target": JobTarget(deployment_id=PIPELINE, revision=2)}, "target.revision"),
        ({"target": JobTarget(pipeline_id=PIPELINE, revision=0)}, "target.revision"),
        ({"target": JobTarget(pipeline_id="p1")}, "target.pipeline_id"),
        ({"target": JobTarget(deployment_id="d1")}, "target.deployment_id"),
        ({"name": "a\x00b"}, "name"),
        ({"cron_expr": "* * *\x00 * *"}, "cron_expr"),
        ({"start_at": datetime(2027, 1, 1)}, "start_at"),
        ({"start_at": LATER, "end_at": datetime(2027, 1, 1, tzinfo=UTC)}, "end_at"),
        ({"params": {"blob": "x" * 70_000}}, "params"),
        ({"params": {"nul": "a\x00b"}}, "params.nul"),
        ({"max_catchup": 0}, "max_catchup"),
        ({"max_catchup": 1001}, "max_catchup"),
        ({"jitter_seconds": -1}, "jitter_seconds"),
        ({"jitter_seconds": 3601}, "jitter_seconds"),
        ({"description": "d" * 10_001}, "description"),
        ({"labels": {"bad key!": "v"}}, "labels.bad key!"),
    ],
)
def test_a_definition_breaking_a_rule_is_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    spec = msgspec.structs.replace(NIGHTLY, **change)
    with pytest.raises(InvalidCommand) as refused:
        Job.create(job_id=uuid4(), tenant_id="t1", spec=spec, enabled=True, ctx=CTX)
    assert refused.value.field == field
    existing = job()
    with pytest.raises(InvalidCommand):
        existing.update(spec, CTX)
    assert recorded(existing) == []


def test_an_update_replaces_the_definition_and_remembers_the_old_name() -> None:
    existing = job()
    renamed = msgspec.structs.replace(NIGHTLY, name="hourly", cron_expr="0 * * * *")
    assert existing.update(renamed, CTX) is True
    [updated] = existing.collect_events()
    assert (updated.spec, updated.previous_name) == (renamed, "nightly")
    assert existing.spec == renamed


def test_an_update_to_the_same_definition_records_nothing() -> None:
    existing = job()
    assert existing.update(NIGHTLY, CTX) is False
    assert recorded(existing) == []


def test_enable_and_disable_record_only_a_change_and_keep_norns_reason() -> None:
    existing = job(enabled=True)
    assert existing.enable(CTX) is False
    assert existing.disable(CTX, reason="pipeline p1 was deleted") is True
    assert (existing.enabled, existing.disabled_reason) == (False, "pipeline p1 was deleted")
    assert existing.disable(CTX) is False
    assert existing.disable(CTX, reason="pipeline p1 was deleted") is False  # said already
    assert existing.enable(CTX) is True
    assert (existing.enabled, existing.disabled_reason) == (True, None)
    assert recorded(existing) == ["JobDisabled", "JobEnabled"]
    assert existing.disable(CTX) is True
    assert existing.disable(CTX, reason="deployment d1 was retired") is True  # Norn's reason
    assert existing.disabled_reason == "deployment d1 was retired"


def test_a_deleted_job_refuses_every_command() -> None:
    existing = job()
    existing.delete(CTX)
    assert recorded(existing) == ["JobDeleted"]
    for command in (
        lambda: existing.update(NIGHTLY, CTX),
        lambda: existing.enable(CTX),
        lambda: existing.disable(CTX),
        lambda: existing.delete(CTX),
    ):
        with pytest.raises(AggregateDeleted):
            command()
    assert recorded(existing) == []
