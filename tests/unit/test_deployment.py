"""The Deployment aggregate (domain/deployment.py): given its events, a command either
records the events it must or is refused and records nothing. Races are decided by the
store's versions (the in-memory store here, the same unique check as PostgreSQL's)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from application.errors import VersionConflict
from domain.deployment import Deployment
from domain.errors import (
    AggregateDeleted,
    Conflict,
    HasDeployments,
    InvalidCommand,
    NoActiveRelease,
    Retired,
    VerificationInProgress,
)
from domain.events import CommandContext
from domain.pipeline_deployments import PipelineDeployments
from domain.release import DIRECT, Strategy, check_policy
from domain.run import RunStatus
from domain.tenant import EnvironmentPolicy, Tenant
from tests.support.memory import memory_store

CTX = CommandContext("user:u1", "corr-1")
GREEN = Strategy(type="blue-green", verification_timeout=60, verification_params={"dry": True})


def deployment(strategy: Strategy = DIRECT, revision: int = 1, **fields: Any) -> Deployment:
    """A deployment with its first release, its events already saved (not pending)."""
    made = Deployment.create(
        deployment_id=uuid4(),
        tenant_id="t1",
        pipeline_id="p1",
        environment=fields.pop("environment", "production"),
        strategy=strategy,
        ctx=CTX,
        **fields,
    )
    made.release(revision, CTX, run_id=str(uuid4()) if strategy.verifies else None)
    made.collect_events()
    return made


def new_events(aggregate: Any) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def verify(d: Deployment, status: RunStatus = RunStatus.SUCCEEDED, late: float = 0.0) -> bool:
    """The verifying release's run ended `late` seconds after its deadline (<= 0: by it)."""
    verifying = d.verifying()
    assert verifying is not None and verifying.deadline and verifying.run_id
    at = verifying.deadline + timedelta(seconds=late)
    return d.record_verification(verifying.release, verifying.run_id, status, at, CTX)


def green(d: Deployment, revision: int) -> str:
    run_id = str(uuid4())
    d.release(revision, CTX, strategy=GREEN, run_id=run_id)
    d.collect_events()
    return run_id


# --- creating and releasing ----------------------------------------------------------------


def test_a_direct_deployment_is_active_at_once() -> None:
    d = Deployment.create(
        deployment_id=uuid4(), tenant_id="t1", pipeline_id="p1", environment="staging", ctx=CTX
    )
    made = d.release(3, CTX)

    assert new_events(d) == ["DeploymentCreated", "ReleaseActivated"]
    assert (d.status, d.active_release, made.release, made.revision) == ("active", 1, 1, 3)
    assert (made.outcome, made.created_by, made.run_id) == ("active", "user:u1", None)


def test_a_blue_green_first_release_verifies_with_a_deadline_from_its_event() -> None:
    d = deployment(GREEN)
    release = d.releases[1]

    assert (d.status, d.active_release, d.verifying_release) == ("verifying", None, 1)
    assert release.outcome == "verifying" and release.run_id is not None
    assert release.deadline == release.created_at + timedelta(seconds=60)
    with pytest.raises(NoActiveRelease):
        d.active()


@pytest.mark.parametrize("name", ["", "Prod", "1prod", "prod_eu", "-x", "a" * 64, "prod eu"])
def test_an_environment_name_is_checked(name: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        deployment(environment=name)
    assert refused.value.field == "environment"


@pytest.mark.parametrize("name", ["p", "production", "eu-west-1", "a" * 63])
def test_environment_names_that_are_accepted(name: str) -> None:
    assert deployment(environment=name).environment == name


@pytest.mark.parametrize(
    "strategy",
    [
        Strategy(type="blue-green"),
        Strategy(type="blue-green", verification_timeout=0),
        Strategy(type="blue-green", verification_timeout=86_401),
        Strategy(type="direct", verification_timeout=60),
        Strategy(type="blue-green", verification_timeout=1, verification_params={"k": "\x00"}),
    ],
)
def test_a_strategy_is_checked(strategy: Strategy) -> None:
    with pytest.raises(InvalidCommand):
        deployment(strategy)


def test_the_timeout_bounds_are_inclusive() -> None:
    for timeout in (1, 86_400):
        assert deployment(Strategy(type="blue-green", verification_timeout=timeout)).status == (
            "verifying"
        )


def test_variables_are_a_json_object_of_at_most_64_kib() -> None:
    assert deployment(variables={"v": "x" * 60_000}).variables["v"]
    with pytest.raises(InvalidCommand) as refused:
        deployment(variables={"v": "x" * 65_536})
    assert refused.value.field == "variables"


def test_a_release_while_another_verifies_is_a_conflict_naming_it() -> None:
    d = deployment()
    green(d, 2)

    with pytest.raises(VerificationInProgress) as refused:
        d.release(3, CTX)
    assert refused.value.release == 2 and "release 2" in str(refused.value)
    assert isinstance(refused.value, Conflict)
    assert new_events(d) == []


def test_a_direct_release_supersedes_the_active_one() -> None:
    d = deployment()
    d.release(2, CTX)

    assert new_events(d) == ["ReleaseActivated"]
    assert [r.outcome for r in d.releases.values()] == ["superseded", "active"]
    assert (d.active_release, d.releases[2].replaced) == (2, 1)


# --- verification outcomes ----------------------------------------------------------------


def test_green_becomes_active_when_its_run_succeeds_and_blue_is_superseded() -> None:
    d = deployment()
    green(d, 2)
    assert (d.status, d.active().release, d.verifying_release) == ("active", 1, 2)  # blue

    assert verify(d)
    assert new_events(d) == ["ReleaseVerified"]
    assert (d.status, d.active_release, d.verifying_release) == ("active", 2, None)
    assert [r.outcome for r in d.releases.values()] == ["superseded", "active"]


@pytest.mark.parametrize(
    "status", [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CRASHED, RunStatus.TIMED_OUT]
)
def test_green_fails_and_blue_stays_active_when_its_run_does_not_succeed(
    status: RunStatus,
) -> None:
    d = deployment()
    green(d, 2)

    assert verify(d, status)
    assert new_events(d) == ["ReleaseFailed"]
    assert (d.status, d.active_release) == ("active", 1)
    assert d.releases[2].outcome == "failed" and status in (d.releases[2].failure or "")


def test_a_failed_first_verification_leaves_the_deployment_failed_without_an_active_release():
    d = deployment(GREEN)
    assert verify(d, RunStatus.FAILED)

    assert (d.status, d.active_release) == ("failed", None)
    d.release(2, CTX, strategy=DIRECT)  # a next release is possible
    assert (d.status, d.active_release) == ("active", 2)


def test_a_run_that_ends_exactly_at_the_deadline_counts_and_one_after_it_does_not() -> None:
    on_time, late = deployment(GREEN), deployment(GREEN)

    assert verify(on_time, late=0.0) and on_time.status == "active"
    assert verify(late, late=0.001) and late.status == "failed"
    assert "after the deadline" in (late.releases[1].failure or "")


def test_an_outcome_applies_once_and_only_to_the_verifying_release_and_its_run() -> None:
    d = deployment()
    run_id = green(d, 2)
    deadline = d.releases[2].deadline
    assert deadline is not None
    assert not d.record_verification(1, run_id, RunStatus.SUCCEEDED, deadline, CTX)
    assert not d.record_verification(2, str(uuid4()), RunStatus.SUCCEEDED, deadline, CTX)
    assert new_events(d) == []

    assert d.record_verification(2, run_id, RunStatus.FAILED, deadline, CTX)
    d.collect_events()
    # A repeat, or a different outcome arriving late: nothing changes.
    assert not d.record_verification(2, run_id, RunStatus.SUCCEEDED, deadline, CTX)
    assert new_events(d) == [] and d.releases[2].outcome == "failed"


def test_an_unfinished_run_is_no_outcome() -> None:
    d = deployment(GREEN)
    verifying = d.releases[1]
    assert verifying.run_id and verifying.deadline
    with pytest.raises(InvalidCommand):
        d.record_verification(1, verifying.run_id, RunStatus.RUNNING, verifying.deadline, CTX)


def test_the_deadline_fails_the_release_only_once_it_has_passed() -> None:
    d = deployment()
    green(d, 2)
    deadline = d.releases[2].deadline
    assert deadline is not None

    assert not d.expire_verification(2, deadline - timedelta(microseconds=1), CTX)
    assert d.expire_verification(2, deadline, CTX)
    assert new_events(d) == ["ReleaseFailed"]
    assert (d.status, d.active_release) == ("active", 1)
    assert not d.expire_verification(2, deadline + timedelta(hours=1), CTX)  # once


def test_a_run_outcome_after_the_deadline_fired_changes_nothing() -> None:
    d = deployment(GREEN)
    deadline = d.releases[1].deadline
    assert deadline is not None and d.expire_verification(1, deadline, CTX)
    d.collect_events()

    assert not verify_at(d, 1, deadline)
    assert new_events(d) == [] and d.status == "failed"


def verify_at(d: Deployment, release: int, at: Any) -> bool:
    run_id = d.releases[release].run_id
    assert run_id is not None
    return d.record_verification(release, run_id, RunStatus.SUCCEEDED, at, CTX)


# --- rollback ----------------------------------------------------------------------------


def test_a_rollback_restores_the_previous_active_release_as_a_new_release() -> None:
    d = deployment(revision=1)
    d.release(2, CTX)
    d.collect_events()

    made = d.roll_back(CTX)
    assert new_events(d) == ["DeploymentRolledBack"]
    assert (made.release, made.revision, made.rolled_back_to, made.replaced) == (3, 1, 1, 2)
    assert [r.outcome for r in d.releases.values()] == ["superseded", "rolled_back", "active"]


def test_a_second_rollback_does_not_return_to_the_release_rolled_back_from() -> None:
    d = deployment(revision=1)
    d.release(2, CTX)
    d.release(3, CTX)
    d.roll_back(CTX)  # release 4: revision 2; release 3 rolled back
    made = d.roll_back(CTX)  # release 5: revision 1

    assert (made.revision, made.rolled_back_to) == (1, 1)
    assert d.releases[3].outcome == "rolled_back" and d.releases[4].outcome == "rolled_back"
    with pytest.raises(Conflict):
        d.roll_back(CTX)  # nothing earlier with another revision is left


def test_a_rollback_to_a_named_release() -> None:
    d = deployment(revision=1)
    for revision in (2, 3):
        d.release(revision, CTX)
    assert d.roll_back(CTX, to_release=1).revision == 1


def test_a_rollback_to_a_release_that_was_never_active_is_refused() -> None:
    d = deployment(revision=1)
    green(d, 2)
    assert verify(d, RunStatus.FAILED)
    d.collect_events()

    with pytest.raises(Conflict):
        d.roll_back(CTX, to_release=2)
    with pytest.raises(Conflict):
        d.roll_back(CTX, to_release=1)  # the active one
    with pytest.raises(InvalidCommand):
        d.roll_back(CTX, to_release=9)
    with pytest.raises(Conflict):
        d.roll_back(CTX)  # no earlier release at all
    assert new_events(d) == []


def test_a_rollback_while_a_release_verifies_is_refused() -> None:
    d = deployment()
    d.release(2, CTX)
    green(d, 3)
    with pytest.raises(VerificationInProgress):
        d.roll_back(CTX)


def test_there_is_never_more_than_one_active_release() -> None:
    d = deployment()
    d.release(2, CTX)
    green(d, 3)
    verify(d)
    d.roll_back(CTX)
    green(d, 4)
    verify(d, RunStatus.FAILED)
    d.release(5, CTX)
    d.roll_back(CTX, to_release=1)

    assert [r.release for r in d.releases.values() if r.outcome == "active"] == [d.active_release]


# --- retire ------------------------------------------------------------------------------


def test_a_retired_deployment_refuses_everything() -> None:
    d = deployment()
    d.release(2, CTX)
    d.collect_events()
    assert d.retire(CTX) is None
    assert new_events(d) == ["DeploymentRetired"]
    assert d.status == "retired"

    for command in (
        lambda: d.release(3, CTX),
        lambda: d.roll_back(CTX),
        lambda: d.retire(CTX),
        d.active,
    ):
        with pytest.raises(Retired):
            command()
    assert new_events(d) == []


def test_retiring_fails_a_verifying_release_and_its_late_outcome_changes_nothing() -> None:
    d = deployment()
    green(d, 2)

    abandoned = d.retire(CTX)
    assert abandoned is not None and abandoned.release == 2
    assert new_events(d) == ["ReleaseFailed", "DeploymentRetired"]
    assert not verify_at(d, 2, d.releases[2].created_at)
    assert not d.expire_verification(2, d.releases[2].created_at + timedelta(days=2), CTX)


# --- races, decided by the store's versions -------------------------------------------------


def saved_copies() -> tuple[Any, Any, Any]:
    store = memory_store()
    d = Deployment.create(
        deployment_id=uuid4(), tenant_id="t1", pipeline_id="p1", environment="prod", ctx=CTX
    )
    d.release(1, CTX)
    store.append(d)
    return (
        store,
        store.load(Deployment, d.id, "deployment"),
        store.load(Deployment, d.id, "deployment"),
    )


def test_two_releases_from_the_same_version_one_is_saved() -> None:
    store, first, second = saved_copies()
    first.release(2, CTX, strategy=GREEN, run_id=str(uuid4()))
    second.release(3, CTX)
    store.append(first)
    with pytest.raises(VersionConflict):
        store.append(second)
    # Decided again on what was saved: the release verifying refuses the second.
    with pytest.raises(VerificationInProgress):
        store.load(Deployment, first.id, "deployment").release(3, CTX)


def test_a_release_racing_a_rollback_one_is_saved() -> None:
    store, first, second = saved_copies()
    for copy in (first, second):
        copy.release(2, CTX)
        store.append(copy) if copy is first else None
    second = store.load(Deployment, first.id, "deployment")
    other = store.load(Deployment, first.id, "deployment")
    second.release(3, CTX)
    other.roll_back(CTX)
    store.append(other)
    with pytest.raises(VersionConflict):
        store.append(second)
    saved = store.load(Deployment, first.id, "deployment")
    assert [r.release for r in saved.releases.values() if r.outcome == "active"] == [3]
    assert saved.releases[3].rolled_back_to == 1


def test_an_outcome_and_the_deadline_at_the_same_moment_one_is_saved() -> None:
    store = memory_store()
    d = deployment(GREEN)
    d2 = Deployment.create(
        deployment_id=uuid4(), tenant_id="t1", pipeline_id="p1", environment="prod", ctx=CTX
    )
    d2.release(1, CTX, strategy=GREEN, run_id=str(uuid4()))
    store.append(d2)
    by_run = store.load(Deployment, d2.id, "deployment")
    by_timer = store.load(Deployment, d2.id, "deployment")
    deadline = by_run.releases[1].deadline
    assert deadline is not None and d.status == "verifying"

    assert verify_at(by_run, 1, deadline)
    assert by_timer.expire_verification(1, deadline, CTX)
    store.append(by_run)
    with pytest.raises(VersionConflict):
        store.append(by_timer)
    saved = store.load(Deployment, d2.id, "deployment")
    assert saved.status == "active"
    assert not saved.expire_verification(1, deadline, CTX)  # decided again: nothing left


# --- environment policies and the pipeline's count ------------------------------------------


def test_an_environment_policy_is_set_replaced_and_removed() -> None:
    tenant = Tenant.create(
        tenant_id=uuid4(), name="acme", description="", plan="free", labels={}, ctx=CTX
    )
    tenant.collect_events()
    strict = EnvironmentPolicy(protected=True, require_verification=True)

    assert tenant.set_environment_policy("production", strict, CTX)
    assert not tenant.set_environment_policy("production", strict, CTX)
    assert tenant.environment_policy("production") == strict
    assert tenant.environment_policy("staging") == EnvironmentPolicy()
    assert tenant.set_environment_policy("production", EnvironmentPolicy(), CTX)
    assert tenant.environments == {}
    assert new_events(tenant) == ["TenantEnvironmentPolicySet", "TenantEnvironmentPolicySet"]
    with pytest.raises(InvalidCommand):
        tenant.set_environment_policy("Prod", strict, CTX)


def test_require_verification_refuses_a_direct_release() -> None:
    policy = EnvironmentPolicy(require_verification=True)
    with pytest.raises(InvalidCommand) as refused:
        check_policy("production", DIRECT, policy)
    assert refused.value.field == "strategy.type"
    check_policy("production", GREEN, policy)


def test_a_pipeline_with_live_deployments_cannot_close_its_count() -> None:
    live = PipelineDeployments.open(tenant_id="t1", pipeline_id="p1", ctx=CTX)
    live.count("d1", CTX)
    with pytest.raises(HasDeployments):
        live.close(CTX)
    live.uncount("d1", CTX)
    live.close(CTX)
    with pytest.raises(AggregateDeleted):
        live.count("d2", CTX)
