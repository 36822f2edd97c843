"""Deployments through the real services on the in-memory store (tests/support/runs.py):
create, release, execute, roll back, retire; verification runs executed by the real
executor and their outcome or deadline reaching the deployment; uniqueness, quotas,
environment policies (role, then policy, then quota) and the pipeline's delete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.deployment_verification import DeploymentVerification
from application.deployments import DeploymentService
from application.errors import NotFound, PermissionDenied
from application.principal import Principal
from domain.errors import (
    HasDeployments,
    InvalidCommand,
    NameTaken,
    NoActiveRelease,
    QuotaExceeded,
    Retired,
    VerificationInProgress,
)
from domain.events import CommandContext, Idempotency
from domain.run import Run
from tests.support.deployments import CTX, GREEN, SYSTEM_CTX, Candidates, World
from tests.support.runs import step


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# --- create ------------------------------------------------------------------------------


def test_a_create_saves_the_deployment_its_claim_count_and_usage_in_one_append(
    world: World,
) -> None:
    made = world.deployments.create(world.editor, world.pipeline_id, "staging", CTX)

    assert (made.release.release, made.release.revision, made.release.outcome) == (1, 1, "active")
    assert made.state.status == "active" and made.position is not None and made.version == 2
    assert world.appends[-1][1] == [
        "DeploymentCreated",
        "ReleaseActivated",
        "NameClaimTaken",
        "PipelineDeploymentsOpened",
        "PipelineDeploymentsCounted",
        "UsageShardTaken",
    ]


def test_the_first_release_is_the_pipelines_current_revision_unless_named(world: World) -> None:
    world.revise(step("e", "Test.emit", config={"count": 2}))

    assert world.create("a").releases[1].revision == 2
    assert world.create("b", revision=1).releases[1].revision == 1
    with pytest.raises(InvalidCommand):
        world.create("c", revision=7)


def test_one_deployment_per_pipeline_and_environment_until_it_is_retired(world: World) -> None:
    first = world.create("production")
    with pytest.raises(NameTaken):
        world.create("production")
    other = world.pipeline("other", step("e", "Test.emit"))
    assert world.create("production", pipeline_id=other).environment == "production"

    world.deployments.retire(world.editor, first.id, CTX)
    assert world.create("production").id != first.id


def test_another_tenants_pipeline_or_deployment_is_not_found(world: World) -> None:
    stranger = replace(world.editor, tenant_id=str(uuid4()))
    mine = world.create()
    with pytest.raises(NotFound):
        world.deployments.load(stranger, mine.id)
    with pytest.raises(NotFound):
        world.deployments.execute(stranger, mine.id, CTX)


def test_max_deployments_is_taken_on_create_and_given_back_on_retire(tmp_path: Path) -> None:
    world = World(tmp_path, max_deployments=1)
    first = world.create("staging")
    with pytest.raises(QuotaExceeded):
        world.create("production")
    world.deployments.retire(world.editor, first.id, CTX)
    assert world.create("production").status == "active"
    assert world.pipelines.ledger.used(world.tenant_id, "max_deployments") == 1


def test_a_suspended_tenant_changes_nothing(world: World) -> None:
    deployment = world.create()
    suspended = replace(world.editor, tenant_status="suspended")
    for command in (
        lambda: world.deployments.release(suspended, deployment.id, CTX),
        lambda: world.deployments.execute(suspended, deployment.id, CTX),
        lambda: world.deployments.retire(suspended, deployment.id, CTX),
        lambda: world.create("other", principal=suspended),
    ):
        with pytest.raises(PermissionDenied):
            command()
    assert world.deployments.load(suspended, deployment.id).status == "active"


# --- blue-green verification -------------------------------------------------------------


async def test_a_verification_run_that_succeeds_makes_green_active(world: World) -> None:
    deployment = world.create(variables={"region": "eu", "mode": "live"})
    world.revise(step("e", "Test.emit", config={"count": 3}))
    released = world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    assert (released.release.release, released.release.outcome) == (2, "verifying")
    assert released.state.status == "active"  # blue stays active while green verifies

    run = world.verification_run(deployment)
    assert world.appends[-1][1][:2] == ["ReleaseVerifying", "RunQueued"]  # one append
    assert run.params == {"region": "eu", "mode": "check"}
    assert (run.revision, run.trigger.kind, run.trigger.id) == (2, "deployment", str(deployment.id))
    assert (run.trigger.environment, run.trigger.release) == ("production", 2)
    # Blue keeps serving while green verifies.
    assert (
        world.run(world.deployments.execute(world.editor, deployment.id, CTX).state.id).revision
        == 1
    )

    assert (await world.execute(run.id)).status == "succeeded"
    # The executor told the deployment right after the run's end.
    after = world.deployment(deployment.id)
    assert (after.status, after.active_release) == ("active", 2)
    assert world.appends[-1][1] == ["ReleaseVerified"]
    again = world.verification.record_verification_outcome(run.id, SYSTEM_CTX)  # a repeat
    assert again is not None and not again.changed


async def test_a_verification_run_that_fails_leaves_blue_active(world: World) -> None:
    deployment = world.create()
    world.revise(step("e", "Test.fail", config={"retryable": False}))
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    run = world.verification_run(deployment)

    assert (await world.execute(run.id)).status == "failed"
    after = world.deployment(deployment.id)
    assert (after.status, after.active_release, after.releases[2].outcome) == (
        "active",
        1,
        "failed",
    )


async def test_a_failed_first_verification_leaves_the_deployment_failed(world: World) -> None:
    world.revise(step("e", "Test.fail", config={"retryable": False}))
    deployment = world.create(strategy=GREEN)
    assert deployment.status == "verifying"
    with pytest.raises(NoActiveRelease):
        world.deployments.execute(world.editor, deployment.id, CTX)

    await world.execute(world.verification_run(deployment).id)
    assert world.deployment(deployment.id).status == "failed"


def test_a_release_while_one_verifies_is_refused_naming_it(world: World) -> None:
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    with pytest.raises(VerificationInProgress) as refused:
        world.deployments.release(world.editor, deployment.id, CTX)
    assert refused.value.release == 2


def test_the_deadline_fails_a_release_whose_run_is_still_queued(world: World) -> None:
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    candidates = Candidates(deployment.id)

    assert world.verification.sweep(candidates, SYSTEM_CTX) == []  # not due yet
    world.later_by = timedelta(seconds=60)
    assert world.verification.sweep(candidates, SYSTEM_CTX) == [deployment.id]
    after = world.deployment(deployment.id)
    assert (after.status, after.active_release, after.releases[2].outcome) == (
        "active",
        1,
        "failed",
    )
    # Its run can no longer count: it is stopped in the same append.
    assert world.appends[-1][1] == ["ReleaseFailed", "RunCancelled"]
    assert world.verification_run_of(after, 2).status == "cancelled"
    assert world.verification.sweep(candidates, SYSTEM_CTX) == []  # once


async def test_a_run_that_ended_by_the_deadline_decides_even_if_the_sweep_comes_first(
    world: World,
) -> None:
    """The run's end was not routed (its consumer was down); the sweep after the deadline
    finds the run ended in time and records its outcome, not the deadline's."""
    world.run_ended = None  # the executor died after saving the run's end
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    await world.execute(world.verification_run(deployment).id)
    assert world.deployment(deployment.id).verifying_release == 2

    world.later_by = timedelta(hours=1)
    world.verification.sweep(Candidates(deployment.id), SYSTEM_CTX)
    assert world.deployment(deployment.id).active_release == 2


async def test_a_run_ending_after_the_deadline_fired_changes_nothing(world: World) -> None:
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    run = world.verification_run(deployment)
    executor = world.executor()
    claim = executor.claim(run.id)  # running when the deadline fires
    assert claim is not None
    world.later_by = timedelta(seconds=61)
    world.verification.sweep(Candidates(deployment.id), SYSTEM_CTX)
    assert world.run(run.id).cancel_requested  # asked to stop; its executor records the end
    executor.cancel_requested(str(run.id))  # the notice the executor role gets from NATS
    await executor.execute(claim)
    assert world.run(run.id).status == "cancelled"

    late = world.verification.record_verification_outcome(run.id, SYSTEM_CTX)
    assert late is not None and not late.changed
    assert world.deployment(deployment.id).releases[2].outcome == "failed"


def test_a_verification_run_counts_against_the_days_runs(tmp_path: Path) -> None:
    world = World(tmp_path, max_runs_per_day=0)
    deployment = world.create()
    with pytest.raises(QuotaExceeded):
        world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    assert world.deployment(deployment.id).next_release == 2  # nothing saved


# --- execute, rollback, retire -----------------------------------------------------------


def test_execute_runs_the_active_revision_with_variables_under_the_callers_params(
    world: World,
) -> None:
    deployment = world.create(variables={"region": "eu", "limit": 10})
    world.revise(step("e", "Test.emit", config={"count": 2}))  # not released: not run

    run = world.deployments.execute(world.editor, deployment.id, CTX, {"limit": 5}).state
    assert (run.revision, run.params) == (1, {"region": "eu", "limit": 5})
    assert (run.trigger.kind, run.trigger.environment, run.trigger.release) == (
        "deployment",
        "production",
        1,
    )


def test_a_rollback_answers_the_new_release_and_what_it_replaced(world: World) -> None:
    deployment = world.create()
    world.revise(step("e", "Test.emit", config={"count": 2}))
    world.deployments.release(world.editor, deployment.id, CTX)

    back = world.deployments.roll_back(world.editor, deployment.id, CTX)
    assert (back.release, back.rolled_back_to, back.previous_release) == (3, 1, 2)
    assert back.state.active().revision == 1 and back.position is not None
    assert world.pipelines.load(world.editor, world.pipeline_id).revision == 2  # untouched


async def test_retiring_fails_the_verifying_release_and_stops_its_run(world: World) -> None:
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    run_id = world.verification_run(deployment).id

    retired = world.deployments.retire(world.editor, deployment.id, CTX)
    assert retired.state.status == "retired" and retired.state.releases[2].outcome == "failed"
    assert world.run(run_id).status == "cancelled"  # queued: cancelled in the same append
    assert world.appends[-1][1][:3] == ["ReleaseFailed", "DeploymentRetired", "NameClaimReleased"]
    for command in (
        lambda: world.deployments.execute(world.editor, deployment.id, CTX),
        lambda: world.deployments.release(world.editor, deployment.id, CTX),
        lambda: world.deployments.retire(world.editor, deployment.id, CTX),
    ):
        with pytest.raises(Retired):
            command()


# --- the pipeline's delete ---------------------------------------------------------------


def test_a_pipeline_with_live_deployments_cannot_be_deleted(world: World) -> None:
    deployment = world.create()
    with pytest.raises(HasDeployments):
        world.pipelines.delete(world.editor, world.pipeline_id, CTX)

    world.deployments.retire(world.editor, deployment.id, CTX)
    world.pipelines.delete(world.editor, world.pipeline_id, CTX)
    with pytest.raises(NotFound):
        world.create("staging")


def test_a_pipeline_never_deployed_is_deleted_and_closed_for_deployments(world: World) -> None:
    world.pipelines.delete(world.editor, world.pipeline_id, CTX)
    assert world.appends[-1][1][:2] == ["PipelineDeleted", "NameClaimReleased"]
    assert "PipelineDeploymentsOpened" in world.appends[-1][1]


# --- environment policies: role, then policy, then quota -----------------------------------


def test_a_protected_environment_needs_an_admin(world: World) -> None:
    world.policy("production", protected=True)
    with pytest.raises(PermissionDenied):
        world.create("production")
    deployment = world.create("production", principal=world.admin)
    for command in (
        lambda: world.deployments.release(world.editor, deployment.id, CTX),
        lambda: world.deployments.roll_back(world.editor, deployment.id, CTX),
        lambda: world.deployments.retire(world.editor, deployment.id, CTX),
    ):
        with pytest.raises(PermissionDenied):
            command()
    # Executing is not changing the deployment: operators and editors may.
    assert world.deployments.execute(world.editor, deployment.id, CTX).state.revision == 1
    assert world.create("staging").environment == "staging"  # other environments are open


def test_require_verification_refuses_a_direct_release(world: World) -> None:
    world.policy("production", require_verification=True)
    with pytest.raises(InvalidCommand):
        world.create("production")
    deployment = world.create("production", strategy=GREEN)
    assert deployment.status == "verifying"


def test_the_role_is_checked_before_the_policy_and_the_policy_before_the_quota(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, max_deployments=0)
    world.policy("production", protected=True, require_verification=True)

    with pytest.raises(PermissionDenied):
        world.create("production")  # an editor, direct, no quota left
    with pytest.raises(InvalidCommand):
        world.create("production", principal=world.admin)  # direct, no quota left
    with pytest.raises(QuotaExceeded):
        world.create("production", principal=world.admin, strategy=GREEN)


def test_principals_other_than_editors_and_admins(world: World) -> None:
    operator = Principal(
        "u3", "op", world.tenant_id, frozenset({"operator"}), tenant_status="active"
    )
    world.policy("production", protected=True)
    deployment = world.create("production", principal=world.admin)
    assert world.deployments.execute(operator, deployment.id, CTX).state.trigger.release == 1


# --- races, decided by the store: a command whose append loses decides again --------------


def racing(world: World, interloper: Callable[[], Any]) -> DeploymentService:
    """A service whose first append lets `interloper` (through the world's own services,
    built before) append first, as a concurrent request in another process would."""
    world.store.append = racing_append(world, interloper)  # type: ignore[method-assign]
    return DeploymentService(world.store, world.pipelines, world.runs)


def test_two_releases_racing_the_loser_decides_again_on_the_winners_release(
    world: World,
) -> None:
    deployment = world.create()
    green_first = racing(
        world,
        lambda: world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN),
    )
    with pytest.raises(VerificationInProgress) as refused:
        green_first.release(world.editor, deployment.id, CTX)
    assert refused.value.release == 2
    assert [r.outcome for r in world.deployment(deployment.id).releases.values()] == [
        "active",
        "verifying",
    ]


def test_a_release_losing_to_a_direct_one_is_the_next_release(world: World) -> None:
    deployment = world.create()
    direct_first = racing(
        world, lambda: world.deployments.release(world.editor, deployment.id, CTX)
    )
    made = direct_first.release(world.editor, deployment.id, CTX, strategy=GREEN)

    assert (made.release.release, made.release.outcome) == (3, "verifying")
    after = world.deployment(deployment.id)
    assert [r.outcome for r in after.releases.values()] == ["superseded", "active", "verifying"]
    assert world.verification_run(after).trigger.release == 3  # one run, of the saved release


def test_a_retire_racing_a_release_leaves_no_live_release(world: World) -> None:
    deployment = world.create()
    released_first = racing(
        world,
        lambda: world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN),
    )
    released_first.retire(world.editor, deployment.id, CTX)

    after = world.deployment(deployment.id)
    assert (after.status, after.releases[2].outcome) == ("retired", "failed")
    assert world.run(UUID(after.releases[2].run_id or "")).status == "cancelled"


async def test_an_outcome_and_the_deadline_at_once_record_one_outcome(world: World) -> None:
    world.run_ended = None  # the run's end is told below, racing the sweep
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    run = await world.execute(world.verification_run(deployment).id)
    world.later_by = timedelta(seconds=60)
    world.store.append = racing_append(  # type: ignore[method-assign]
        world, lambda: world.verification.record_verification_outcome(run.id, SYSTEM_CTX)
    )
    sweep_after_the_run = DeploymentVerification(world.store, clock=world.now)

    done = sweep_after_the_run.settle(deployment.id, SYSTEM_CTX)
    assert done is not None and not done.changed  # it decided again: nothing verifying
    names = [type(e).__name__ for e in world.store.stream(deployment.id)]
    assert names.count("ReleaseVerified") == 1 and "ReleaseFailed" not in names


def racing_append(world: World, interloper: Callable[[], Any]) -> Any:
    append = world.store.append
    ran: list[bool] = []

    def after_the_interloper(*aggregates: Any, **options: Any) -> int | None:
        if not ran:
            ran.append(True)
            interloper()
        return append(*aggregates, **options)

    return after_the_interloper


# --- idempotent requests -------------------------------------------------------------------


def with_key(key: str, earlier_attempt: bool = False) -> CommandContext:
    idempotency = Idempotency(key, earlier_attempt)
    return CommandContext(
        "user:u1", "corr-1", causation_id=idempotency.causation_id, idempotency=idempotency
    )


def test_an_earlier_attempts_create_is_answered_not_made_again(world: World) -> None:
    first = world.deployments.create(
        world.editor, world.pipeline_id, "production", with_key("k1"), strategy=GREEN
    )
    again = world.deployments.create(
        world.editor, world.pipeline_id, "production", with_key("k1", earlier_attempt=True)
    )
    assert (again.state.id, again.replayed, again.release.release) == (first.state.id, True, 1)
    assert again.position == first.position
    queued = [names for _, names in world.appends if "RunQueued" in names]
    assert len(queued) == 1


def test_an_earlier_attempts_release_is_answered_not_made_again(world: World) -> None:
    deployment = world.create()
    first = world.deployments.release(world.editor, deployment.id, with_key("k2"))
    again = world.deployments.release(
        world.editor, deployment.id, with_key("k2", earlier_attempt=True)
    )
    assert (again.replayed, again.release.release, again.position) == (
        True,
        2,
        first.position,
    )
    assert world.deployment(deployment.id).next_release == 3


async def test_runs_that_verify_nothing_record_nothing(world: World) -> None:
    deployment = world.create()
    executed = world.deployments.execute(world.editor, deployment.id, CTX).state.id
    plain = world.trigger(world.pipeline_id)
    for run_id in (executed, plain):
        await world.execute(run_id)
    appends = len(world.appends)

    assert world.verification.record_verification_outcome(plain, SYSTEM_CTX) is None
    by_execute = world.verification.record_verification_outcome(executed, SYSTEM_CTX)
    assert by_execute is not None and not by_execute.changed
    assert world.verification.settle(uuid4(), SYSTEM_CTX) is None  # no such deployment
    assert len(world.appends) == appends


async def test_an_executor_that_fails_to_tell_still_saves_the_run(world: World) -> None:
    def unreachable(run: Run) -> None:
        raise ConnectionError("the database blinked")

    world.run_ended = unreachable
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    run = await world.execute(world.verification_run(deployment).id)

    assert run.status == "succeeded"
    assert world.deployment(deployment.id).verifying_release == 2  # the sweep settles it
    world.verification.sweep(Candidates(deployment.id), SYSTEM_CTX)
    assert world.deployment(deployment.id).active_release == 2


async def test_a_verification_run_whose_executor_died_fails_the_release(tmp_path: Path) -> None:
    """kill -9 of the executor running it: recovery crashes the run (no attempts left)
    and the release fails through the same path; blue stays active."""
    world = World(tmp_path, max_attempts=1)
    deployment = world.create()
    world.deployments.release(world.editor, deployment.id, CTX, strategy=GREEN)
    run_id = world.verification_run(deployment).id
    assert world.claim(run_id) is not None  # claimed, then its executor vanishes

    world.heartbeats.later(60)
    await world.recovery.sweep()
    assert world.run(run_id).status == "crashed"
    after = world.deployment(deployment.id)
    assert (after.status, after.active_release, after.releases[2].outcome) == (
        "active",
        1,
        "failed",
    )
