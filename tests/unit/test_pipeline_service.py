"""PipelineService use cases end to end on an in-memory event store (milliseconds, no
I/O): names, quotas and what each command appends. The same wiring as production apart
from the persistence module (tests/support/memory.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from uuid import uuid4

import pytest

from application.errors import QuotaExceeded
from application.pipelines import PipelineService
from application.principal import Principal
from domain.errors import NameTaken
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import PipelineDefinition, StepSpec
from domain.tenant import Quotas, Tenant
from infrastructure.plugins.catalog import PluginCatalog
from tests.support.memory import StoreUsage, memory_store

CTX = CommandContext("user:u1", "corr-1")


def definition(name: str) -> PipelineDefinition:
    return PipelineDefinition(
        name=name, steps=(StepSpec("read", "Input.file", {"path": "in.jsonl"}),)
    )


class World:
    def __init__(self, max_pipelines: int | None = None) -> None:
        self.store = memory_store()
        self.usage = StoreUsage(self.store)
        self.service = PipelineService(self.store, PluginCatalog(), self.usage)
        tenant = Tenant.create(
            tenant_id=uuid4(), name="acme", description="", plan="free", labels={}, ctx=CTX
        )
        if max_pipelines is not None:
            tenant.set_quotas(Quotas(max_pipelines=max_pipelines), CTX)
        self.store.append(tenant)
        self.tenant_id = tenant.tenant_id
        self.editor = Principal(
            "u1", "ada", self.tenant_id, frozenset({"editor"}), tenant_status="active", plan="free"
        )

    def stored(self) -> list[str]:
        """Topics of every stored event, in order."""
        notifications = self.store.recorder.select_notifications(start=None, limit=10_000)  # type: ignore[attr-defined]
        return [n.topic.rsplit(":", 1)[-1] for n in notifications]


@pytest.fixture
def world() -> Iterator[World]:
    yield World()


def test_create_appends_the_pipeline_and_its_name_claim_together(world: World) -> None:
    before = len(world.stored())
    created = world.service.create(world.editor, definition("orders"), CTX)
    assert world.stored()[before:] == ["PipelineCreated", "NameClaimTaken"]
    assert created.position == len(world.stored())  # the append's last event
    claim = world.store.find(NameClaim, claim_id(f"pipeline:{world.tenant_id}", "orders"))
    assert claim is not None and claim.holder_id == str(created.state.id)


def test_a_taken_name_is_refused_and_nothing_is_stored(world: World) -> None:
    world.service.create(world.editor, definition("orders"), CTX)
    before = world.stored()
    with pytest.raises(NameTaken):
        world.service.create(world.editor, definition("ORDERS "), CTX)
    assert world.stored() == before


def test_a_released_name_is_taken_over_by_a_new_pipeline(world: World) -> None:
    first = world.service.create(world.editor, definition("orders"), CTX)
    world.service.delete(world.editor, first.state.id, CTX)
    again = world.service.create(world.editor, definition("orders"), CTX)
    assert world.stored()[-2:] == ["PipelineCreated", "NameClaimRetaken"]
    claim = world.store.find(NameClaim, claim_id(f"pipeline:{world.tenant_id}", "orders"))
    assert claim is not None and claim.holder_id == str(again.state.id)


def test_the_quota_holds_exactly_and_a_delete_frees_a_unit() -> None:
    world = World(max_pipelines=3)
    made = [world.service.create(world.editor, definition(f"p{i}"), CTX) for i in range(3)]
    before = world.stored()
    with pytest.raises(QuotaExceeded) as refused:
        world.service.create(world.editor, definition("p3"), CTX)
    assert (refused.value.limit, refused.value.used) == (3, 3)
    assert world.stored() == before
    world.service.delete(world.editor, made[0].state.id, CTX)
    world.service.create(world.editor, definition("p3"), CTX)


def test_racing_creates_near_the_limit_never_pass_it() -> None:
    world = World(max_pipelines=5)
    results: list[str] = []

    def create(i: int) -> None:
        try:
            world.service.create(world.editor, definition(f"race-{i}"), CTX)
            results.append("created")
        except QuotaExceeded:
            results.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("created") == 5 and results.count("refused") == 7
    assert world.usage.count(world.tenant_id, "pipelines") == 5


def test_racing_creates_of_one_name_store_exactly_one(world: World) -> None:
    outcomes: list[str] = []

    def create() -> None:
        try:
            world.service.create(world.editor, definition("same"), CTX)
            outcomes.append("created")
        except NameTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 1
    assert world.stored().count("PipelineCreated") == 1


def test_far_from_the_limit_the_bounds_read_with_authentication_spare_the_usage_query() -> None:
    world = World(max_pipelines=100_000)
    bounds = world.usage.read([], world.tenant_id).usage_bounds
    principal = replace(world.editor, usage_bounds=bounds)
    world.service.create(principal, definition("a"), CTX)
    assert world.usage.at_most_calls == 0
    world.service.create(world.editor, definition("b"), CTX)  # no bounds at hand: asks
    assert world.usage.at_most_calls == 1
