"""Commands asked with an Idempotency-Key, at the service level (in-memory store): the ids
of what they create derive from the key, so an attempt after a crash finds what the
earlier one made and answers it as that one would have, marked replayed, instead of
acting a second time; on existing aggregates the earlier change is found by its cause.
The HTTP side (leases, takeover, the kept response) is tests/integration/
test_api_idempotency.py; the crash itself, tests/e2e/test_api_killed_idempotency.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.idempotency import new_id
from application.principal import Principal
from application.tenants import TenantService
from application.users import UserService
from domain.errors import InvalidCommand
from domain.events import CommandContext, Idempotency
from domain.pipeline import PipelineDefinition
from infrastructure.security import Argon2PasswordHasher
from tests.support.runs import CTX, RunWorld, step


def attempt(key_id: str, earlier: bool = False) -> CommandContext:
    """The context of one attempt of an idempotent request (api/controllers/common.py)."""
    idempotency = Idempotency(key_id, earlier_attempt=earlier)
    return CommandContext("user:u1", "corr-1", idempotency.causation_id, idempotency)


@pytest.fixture
def world(tmp_path: Path) -> RunWorld:
    return RunWorld(tmp_path)


def test_ids_derive_from_the_key_and_what_they_name() -> None:
    first, retry = attempt("k1"), attempt("k1", earlier=True)
    assert new_id(first, "run") == new_id(retry, "run")
    assert new_id(first, "run") != new_id(attempt("k2"), "run")
    assert new_id(first, "run") != new_id(first, "pipeline")
    assert new_id(CTX, "run") != new_id(CTX, "run")  # no key: a new id each time
    # Every attempt of a request is one cause; without a key, the request is.
    assert first.causation_id == retry.causation_id != attempt("k2").causation_id


def queued_runs(world: RunWorld) -> int:
    return sum(names.count("RunQueued") for _, names in world.appends)


def test_a_trigger_retried_after_a_crash_answers_the_first_run(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    first = world.runs.trigger(world.editor, pipeline_id, params={}, ctx=attempt("k1"))
    appends = len(world.appends)

    ctx = attempt("k1", True)
    retry = world.runs.trigger(world.editor, pipeline_id, params={}, ctx=ctx)

    assert (retry.state.id, retry.version, retry.position) == (
        first.state.id,
        first.version,
        first.position,
    )
    assert retry.state.status == first.state.status == "queued"
    assert (first.replayed, retry.replayed) == (False, True)
    assert len(world.appends) == appends  # found, not appended again
    assert ctx.idempotency is not None  # noted, for the API's Idempotent-Replayed
    assert ctx.idempotency.answered_earlier == [str(first.state.id)]
    assert queued_runs(world) == 1


def test_an_attempt_that_thought_itself_first_finds_the_run_by_its_id(world: RunWorld) -> None:
    """The earlier attempt was taken for dead but was not: both decide; the second's
    append is refused (same run id) and it answers the first's run."""
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    first = world.runs.trigger(world.editor, pipeline_id, params={}, ctx=attempt("k1"))
    second = world.runs.trigger(world.editor, pipeline_id, params={}, ctx=attempt("k1"))
    assert (second.state.id, second.position, second.replayed) == (
        first.state.id,
        first.position,
        True,
    )
    assert queued_runs(world) == 1


def test_a_retry_whose_earlier_attempt_died_before_acting_acts_once(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    ctx = attempt("k1", True)
    run = world.runs.trigger(world.editor, pipeline_id, params={}, ctx=ctx)
    assert (run.replayed, run.state.id) == (False, new_id(attempt("k1"), "run"))
    assert ctx.idempotency is not None and ctx.idempotency.answered_earlier == []
    other = world.runs.trigger(world.editor, pipeline_id, params={}, ctx=attempt("k2"))
    assert other.state.id != run.state.id and queued_runs(world) == 2


async def test_a_retried_run_retry_queues_one_new_run(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("x", "Test.fail", config={"message": "no"}))
    failed = await world.execute(world.trigger(pipeline_id))
    first = world.runs.retry(world.editor, failed.id, from_failed_step=False, ctx=attempt("r"))
    again = world.runs.retry(
        world.editor, failed.id, from_failed_step=False, ctx=attempt("r", True)
    )
    assert (again.state.id, again.position, again.replayed) == (
        first.state.id,
        first.position,
        True,
    )
    assert queued_runs(world) == 2  # the failed run and its one retry


def test_a_create_retried_after_a_crash_answers_the_first_pipeline(world: RunWorld) -> None:
    body = PipelineDefinition(name="nightly", steps=(step("e", "Test.emit"),))
    first = world.pipelines.create(world.editor, body, attempt("c1"))
    retry = world.pipelines.create(world.editor, body, attempt("c1", True))
    raced = world.pipelines.create(world.editor, body, attempt("c1"))  # no NameTaken
    for answer in (retry, raced):
        assert (answer.state.id, answer.version, answer.position, answer.replayed) == (
            first.state.id,
            first.version,
            first.position,
            True,
        )
    created = [names for _, names in world.appends if "PipelineCreated" in names]
    assert len(created) == 1


def revisions(world: RunWorld, pipeline_id: UUID) -> list[str]:
    return [name for name in world.names(pipeline_id) if name != "PipelineCreated"]


def test_a_rollback_retried_after_a_crash_rolls_back_once(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    v2 = PipelineDefinition(name="p", description="v2", steps=(step("e", "Test.emit"),))
    world.pipelines.revise(world.editor, pipeline_id, v2, CTX)

    first = world.pipelines.roll_back(world.editor, pipeline_id, 1, attempt("rb"))
    retry = world.pipelines.roll_back(world.editor, pipeline_id, 1, attempt("rb", True))

    assert retry == replace(first, replayed=True)
    assert (first.state.revision, first.previous_revision, first.rolled_back_to) == (3, 2, 1)
    assert revisions(world, pipeline_id) == ["PipelineRevised", "PipelineRolledBack"]


def test_a_rollback_retried_after_later_changes_answers_as_it_did(world: RunWorld) -> None:
    """The retry comes after someone else revised the pipeline: the answer is the
    rollback's, at its version, not the pipeline as it is now; If-Match of the first
    attempt does not refuse it either."""
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    v2 = PipelineDefinition(name="p", description="v2", steps=(step("e", "Test.emit"),))
    world.pipelines.revise(world.editor, pipeline_id, v2, CTX)
    first = world.pipelines.roll_back(world.editor, pipeline_id, 1, attempt("rb"), 2)
    world.pipelines.revise(world.editor, pipeline_id, v2, CTX)

    retry = world.pipelines.roll_back(world.editor, pipeline_id, 1, attempt("rb", True), 2)

    assert (retry.version, retry.position, retry.state.revision) == (
        first.version,
        first.position,
        3,
    )
    assert revisions(world, pipeline_id).count("PipelineRolledBack") == 1


def test_a_delete_retried_after_a_crash_answers_the_delete(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    first = world.pipelines.delete(world.editor, pipeline_id, attempt("d"))
    retry = world.pipelines.delete(world.editor, pipeline_id, attempt("d", True))
    assert (retry.version, retry.position, retry.replayed) == (
        first.version,
        first.position,
        True,
    )
    assert world.names(pipeline_id).count("PipelineDeleted") == 1


def test_a_cancel_retried_after_a_crash_answers_the_cancel(world: RunWorld) -> None:
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    first = world.runs.cancel(world.editor, run_id, attempt("x"))
    retry = world.runs.cancel(world.editor, run_id, attempt("x", True))
    assert (retry.version, retry.position, retry.state.status) == (
        first.version,
        first.position,
        "cancelled",
    )
    assert first.position is not None and retry.replayed


def test_a_tenant_create_retried_after_a_crash_answers_the_first_tenant(
    world: RunWorld,
) -> None:
    tenants = TenantService(world.store, world.usage)
    root = Principal("root", "root", None, frozenset({"platform_admin"}))
    fields: dict[str, Any] = {"name": "globex", "description": "", "plan": "free"}
    first = tenants.create(root, **fields, labels={}, owner="root", ctx=attempt("t"))
    retry = tenants.create(root, **fields, labels={}, owner="root", ctx=attempt("t", True))
    assert (retry.state.id, retry.version, retry.position, retry.replayed) == (
        first.state.id,
        first.version,
        first.position,
        True,
    )


def test_a_user_create_retried_after_a_crash_answers_the_first_user(world: RunWorld) -> None:
    """A user's id derives from its name, not from the key: the earlier attempt's user
    is known by its first event's cause, anyone else's is still a taken name."""
    users = UserService(world.store, Argon2PasswordHasher(8, 1, 1))
    fields: dict[str, Any] = {
        "username": "carol",
        "password": "correct-horse-battery-staple",
        "tenant_id": world.tenant_id,
        "roles": ("viewer",),
    }
    admin = Principal("u9", "root", None, frozenset({"platform_admin"}))
    first = users.create(admin, **fields, ctx=attempt("u"))
    retry = users.create(admin, **fields, ctx=attempt("u", True))
    assert (retry.state.id, retry.version, retry.position, retry.replayed) == (
        first.state.id,
        first.version,
        first.position,
        True,
    )
    with pytest.raises(InvalidCommand, match="already taken"):
        users.create(admin, **fields, ctx=attempt("another", True))
