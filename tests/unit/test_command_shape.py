"""The shape every command has (application/commands.py, application/results.py) and the
one seam to the worker threads (application/threads.py), on an in-memory event store."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest

from application.authorization import sees
from application.commands import Aggregates
from application.errors import NotFound, VersionConflict
from application.principal import Principal
from application.threads import Threaded
from domain.events import CommandContext
from domain.name_claim import NameClaim
from domain.tenant import Tenant
from tests.support.memory import memory_store

CTX = CommandContext("user:u1", "corr-1")


def new_tenant(name: str) -> Tenant:
    return Tenant.create(
        tenant_id=uuid4(), name=name, description="", plan="free", labels={}, ctx=CTX
    )


class World:
    def __init__(self) -> None:
        self.store = memory_store()
        self.tenants = Aggregates(
            self.store,
            Tenant,
            "tenant",
            scope=lambda principal, tenant: sees(principal, tenant.tenant_id),
            gone=lambda tenant: tenant.status == "deleted",
        )
        self.acme = new_tenant("acme")
        self.store.append(self.acme)
        self.inside = Principal("u1", "ada", self.acme.tenant_id, frozenset({"admin"}))
        self.outside = Principal("u2", "bob", str(uuid4()), frozenset({"admin"}))


@pytest.fixture
def world() -> World:
    return World()


def test_a_change_answers_the_state_its_version_and_the_position(world: World) -> None:
    def decide(tenant: Tenant) -> None:
        tenant.add_namespace("prod", CTX)

    done = world.tenants.change(world.inside, world.acme.id, decide)

    assert done.state.namespaces == ("prod",)
    assert done.version == done.state.version == 2
    assert done.position is not None and done.changed


def test_a_command_that_decides_nothing_appends_nothing(world: World) -> None:
    def decide(tenant: Tenant) -> None:
        tenant.suspend("", CTX)

    world.tenants.change(world.inside, world.acme.id, decide)
    again = world.tenants.change(world.inside, world.acme.id, decide)

    assert (again.position, again.changed, again.version) == (None, False, 2)


def test_another_tenants_aggregate_is_not_found_never_forbidden(world: World) -> None:
    decided: list[Tenant] = []

    with pytest.raises(NotFound):
        world.tenants.change(world.outside, world.acme.id, decided.append)
    assert decided == []  # the domain never saw it


def test_a_gone_aggregate_is_not_found_unless_asked_for(world: World) -> None:
    def decide(tenant: Tenant) -> None:
        tenant.delete(CTX)

    world.tenants.change(world.inside, world.acme.id, decide)

    with pytest.raises(NotFound):
        world.tenants.load(world.inside, world.acme.id)
    assert world.tenants.load(world.inside, world.acme.id, deleted_ok=True).version == 2


def test_a_stale_expected_version_is_a_failed_precondition(world: World) -> None:
    decided: list[Tenant] = []

    with pytest.raises(VersionConflict) as refused:
        world.tenants.change(world.inside, world.acme.id, decided.append, expected_version=7)
    assert refused.value.precondition and decided == []


def test_a_stale_expected_version_says_the_version_now_and_its_position(world: World) -> None:
    def decide(tenant: Tenant) -> None:
        tenant.add_namespace("prod", CTX)

    done = world.tenants.change(world.inside, world.acme.id, decide, expected_version=1)
    with pytest.raises(VersionConflict) as refused:
        world.tenants.change(world.inside, world.acme.id, decide, expected_version=1)
    assert (refused.value.current_version, refused.value.position) == (2, done.position)


def test_the_other_aggregates_a_decision_returns_are_saved_in_the_same_append(
    world: World,
) -> None:
    claim = NameClaim.claim_new(
        tenant_id=None, scope="tenant", name="acme-2", holder_id=world.acme.tenant_id, ctx=CTX
    )

    def decide(tenant: Tenant) -> list[NameClaim]:
        tenant.update(name="acme-2", description="", labels={}, owner="", ctx=CTX)
        return [claim]

    done = world.tenants.change(world.inside, world.acme.id, decide)

    last = world.store.recorder.select_notifications(start=None, limit=100)[-1]  # type: ignore[attr-defined]
    assert (last.id, last.originator_id) == (done.position, claim.id)
    assert world.store.find(NameClaim, claim.id) is not None


class Blocking:
    def where(self) -> str:
        return threading.current_thread().name

    def fail(self) -> None:
        raise NotFound("thing", "x")

    value = 3


async def test_a_threaded_service_runs_each_method_in_a_worker_thread() -> None:
    threaded = Threaded(Blocking())

    assert await threaded.where() != threading.current_thread().name
    assert threaded.where is threaded.where  # wrapped once, then a plain lookup
    with pytest.raises(NotFound):
        await threaded.fail()
    with pytest.raises(AttributeError):
        threaded._private  # noqa: B018 - private methods stay private
    with pytest.raises(AttributeError):
        threaded.value  # noqa: B018 - only methods cross the seam
