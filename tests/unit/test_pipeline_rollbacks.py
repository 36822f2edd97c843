"""A pipeline's rollback with `redeploy` through the real services on the in-memory store:
the new revision released to every deployment not retired, each with its own strategy and
under its environment's rules; refusals reported per deployment; a retried idempotent
request releasing nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from application.authorization import ROLE_PERMISSIONS, Permission
from domain.errors import InvalidCommand, VerificationInProgress
from domain.events import CommandContext, Idempotency
from tests.support.deployments import CTX, GREEN, World
from tests.support.runs import step


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.revise(step("e", "Test.emit", config={"count": 2}))
    return world  # revisions 1 and 2; rolling back to 1 makes revision 3


def outcomes(done: object) -> dict[str, tuple]:
    redeployments = done.redeployments  # type: ignore[attr-defined]
    return {
        r.environment: (r.released.release.release, r.released.release.outcome)
        if r.released
        else type(r.refused).__name__
        for r in redeployments
    }


def test_without_redeploy_only_the_pipeline_changes(world: World) -> None:
    staging = world.create("staging")
    done = world.rollbacks.roll_back(world.editor, world.pipeline_id, 1, CTX)
    assert (done.state.revision, done.rolled_back_to, done.previous_revision) == (3, 1, 2)
    assert done.redeployments == []
    assert world.deployment(staging.id).active().revision == 2


async def test_redeploy_releases_the_new_revision_to_every_live_deployment_with_its_strategy(
    world: World,
) -> None:
    staging = world.create("staging")
    production = world.create("production", strategy=GREEN)
    retired = world.create("qa")
    world.deployments.retire(world.editor, retired.id, CTX)
    await world.execute(world.verification_run(production).id)  # green becomes active

    done = world.rollbacks.roll_back(world.editor, world.pipeline_id, 1, CTX, redeploy=True)

    assert outcomes(done) == {"staging": (2, "active"), "production": (2, "verifying")}
    assert world.deployment(staging.id).active().revision == 3
    verifying = world.deployment(production.id).verifying()
    assert verifying is not None and verifying.revision == 3 and verifying.run_id
    assert world.deployment(production.id).active().revision == 2  # blue keeps serving
    assert world.deployment(retired.id).next_release == 2  # untouched


def test_a_deployment_refusing_the_release_is_reported_and_the_others_still_release(
    world: World,
) -> None:
    world.policy("production", protected=True)
    world.policy("audit", require_verification=True)
    world.create("production", principal=world.admin)
    world.create("audit", strategy=GREEN)  # still verifying: a release there is refused
    world.create("staging")

    done = world.rollbacks.roll_back(world.editor, world.pipeline_id, 1, CTX, redeploy=True)

    assert outcomes(done) == {
        "production": "PermissionDenied",
        "audit": "VerificationInProgress",
        "staging": (2, "active"),
    }
    assert done.state.revision == 3  # the rollback itself stands


def test_require_verification_refuses_a_deployment_whose_own_strategy_is_direct(
    world: World,
) -> None:
    staging = world.create("staging")
    world.policy("staging", require_verification=True)
    done = world.rollbacks.roll_back(world.editor, world.pipeline_id, 1, CTX, redeploy=True)
    [refused] = done.redeployments
    assert isinstance(refused.refused, InvalidCommand)
    assert refused.deployment_id == str(staging.id)


def test_every_role_that_may_roll_a_pipeline_back_may_release_it() -> None:
    """Why the redeploy asks no permission of its own: the route's (pipelines:write)
    implies deployments:write; protected environments are the release's to refuse."""
    for role, granted in ROLE_PERMISSIONS.items():
        if Permission.PIPELINES_WRITE in granted:
            assert Permission.DEPLOYMENTS_WRITE in granted, role


def with_key(key: str, earlier_attempt: bool = False) -> CommandContext:
    idempotency = Idempotency(key, earlier_attempt)
    return CommandContext(
        "user:u1", "corr-1", causation_id=idempotency.causation_id, idempotency=idempotency
    )


async def test_a_retried_request_releases_nothing_twice_and_each_verification_run_is_its_own(
    world: World,
) -> None:
    for environment in ("staging", "production"):
        made = world.create(environment, strategy=GREEN)
        await world.execute(world.verification_run(made).id)

    first = world.rollbacks.roll_back(
        world.editor, world.pipeline_id, 1, with_key("k1"), redeploy=True
    )
    again = world.rollbacks.roll_back(
        world.editor, world.pipeline_id, 1, with_key("k1", earlier_attempt=True), redeploy=True
    )

    runs = {r.released.release.run_id for r in first.redeployments if r.released}
    assert len(runs) == 2  # one verification run per deployment, ids derived apart
    assert (
        outcomes(again)
        == outcomes(first)
        == {
            "staging": (2, "verifying"),
            "production": (2, "verifying"),
        }
    )
    assert again.replayed and again.state.revision == 3
    assert [r.released.replayed for r in again.redeployments if r.released] == [True, True]
    queued = [names for _, names in world.appends if "RunQueued" in names]
    assert len(queued) == 4  # two first releases, two redeploys; none made again


def test_a_verifying_release_refusal_names_the_verifying_release(world: World) -> None:
    world.create("production", strategy=GREEN)
    done = world.rollbacks.roll_back(world.editor, world.pipeline_id, 1, CTX, redeploy=True)
    [refused] = done.redeployments
    assert isinstance(refused.refused, VerificationInProgress)
    assert "release 1" in str(refused.refused)
