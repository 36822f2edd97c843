"""PipelineService use cases end to end on an in-memory event store (milliseconds, no
I/O): names, quotas and what each command appends. The same wiring as production apart
from the persistence module (tests/support/memory.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.errors import QuotaExceeded, VersionConflict
from application.pipelines import PipelineService
from application.principal import Principal
from application.quotas import UsageLedger
from domain.errors import NameTaken
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import Pipeline, PipelineDefinition, StepSpec
from domain.tenant import Quotas, Tenant
from domain.usage import SHARDS
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


def test_create_appends_the_pipeline_its_name_claim_and_usage_together(world: World) -> None:
    before = len(world.stored())
    created = world.service.create(world.editor, definition("orders"), CTX)
    # The process's shard of the usage is refilled from the main usage, counted now, in
    # an append of its own; the create then takes from the shard in its append.
    assert world.stored()[before:] == [
        *["UsageCounted", "UsageAllotted", "UsageShardOpened", "UsageShardGranted"],
        *["PipelineCreated", "NameClaimTaken", "UsageShardTaken"],
    ]
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
    assert world.stored()[-3:] == ["PipelineCreated", "NameClaimRetaken", "UsageShardTaken"]
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


def usage_of(world: World) -> int | None:
    return world.service.ledger.used(world.tenant_id, "max_pipelines")


def another_process(world: World, *, same_shard: bool = False, n: int = 1) -> PipelineService:
    """Another API process: the same store, its own kept usage and locks, and its own
    shard of the usage (the n-th after this one's) unless `same_shard`."""
    shard = world.service.ledger.shard if same_shard else (world.service.ledger.shard + n) % SHARDS
    ledger = UsageLedger(world.store, world.usage, shard=shard)
    return PipelineService(world.store, PluginCatalog(), world.usage, ledger=ledger)


def test_usage_starts_at_what_existed_before_it_was_kept() -> None:
    world = World(max_pipelines=3)
    for name in ("old-1", "old-2"):  # saved the way releases before usage was kept did
        pipeline = Pipeline.create(
            pipeline_id=uuid4(),
            tenant_id=world.tenant_id,
            definition=definition(name),
            check_plugin=PluginCatalog().check_step,
            ctx=CTX,
        )
        world.store.append(pipeline)
    assert usage_of(world) is None
    world.service.create(world.editor, definition("new"), CTX)
    assert world.stored().count("UsageCounted") == 1
    assert usage_of(world) == 3
    with pytest.raises(QuotaExceeded):
        world.service.create(world.editor, definition("one-too-many"), CTX)


def test_a_warm_create_reads_no_usage() -> None:
    world = World(max_pipelines=100)
    world.service.create(world.editor, definition("a"), CTX)
    counted = world.usage.count_calls
    for name in ("b", "c", "d"):
        world.service.create(world.editor, definition(name), CTX)
    assert world.usage.count_calls == counted == 1
    assert world.stored()[-3:] == ["PipelineCreated", "NameClaimTaken", "UsageShardTaken"]
    assert usage_of(world) == 4


def test_a_stale_copy_in_a_process_on_the_same_shard_is_read_again_and_counts_exactly() -> None:
    world = World(max_pipelines=100)
    other = another_process(world, same_shard=True)
    for i in range(3):  # each process's kept copy is stale after the other's create
        world.service.create(world.editor, definition(f"here-{i}"), CTX)
        other.create(world.editor, definition(f"there-{i}"), CTX)
    assert usage_of(world) == 6
    assert world.stored().count("UsageCounted") == 1


def test_racing_processes_near_the_limit_never_pass_it() -> None:
    world = World(max_pipelines=5)
    services = [world.service, another_process(world), another_process(world, n=2)]
    outcomes: list[str] = []

    def create(service: PipelineService, i: int) -> None:
        try:
            service.create(world.editor, definition(f"p{i}"), CTX)
            outcomes.append("created")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(services[i % 3], i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 5
    assert world.stored().count("PipelineCreated") == 5
    assert usage_of(world) == 5


def test_a_lowered_limit_refuses_creates_but_deletes_still_release() -> None:
    world = World(max_pipelines=10)
    made = [world.service.create(world.editor, definition(f"p{i}"), CTX) for i in range(3)]
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    tenant.set_quotas(Quotas(max_pipelines=1), CTX)
    world.store.append(tenant)
    with pytest.raises(QuotaExceeded):
        world.service.create(world.editor, definition("more"), CTX)
    for changed in made[:2]:
        world.service.delete(world.editor, changed.state.id, CTX)
    assert usage_of(world) == 1
    with pytest.raises(QuotaExceeded):
        world.service.create(world.editor, definition("still-full"), CTX)
    world.service.delete(world.editor, made[2].state.id, CTX)
    world.service.create(world.editor, definition("fits-again"), CTX)
    assert usage_of(world) == 1


def test_a_stale_if_match_is_refused_at_once_without_retrying() -> None:
    world = World(max_pipelines=10)
    made = world.service.create(world.editor, definition("p"), CTX)
    loads = 0
    load = world.store.load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        nonlocal loads
        loads += 1
        return load(*args, **kwargs)

    world.store.load = counting_load  # type: ignore[method-assign]
    with pytest.raises(VersionConflict) as refused:
        world.service.delete(world.editor, made.state.id, CTX, expected_version=99)
    assert refused.value.precondition and loads == 1


def test_a_refusal_from_a_copy_another_process_made_stale_is_decided_again_on_the_store() -> None:
    world = World(max_pipelines=2)
    other = another_process(world)
    first = world.service.create(world.editor, definition("a"), CTX)
    world.service.create(world.editor, definition("b"), CTX)  # kept here: 2 of 2
    other.delete(world.editor, first.state.id, CTX)  # the store: 1 of 2

    world.service.create(world.editor, definition("c"), CTX)

    assert usage_of(world) == 2
    with pytest.raises(QuotaExceeded):  # full now, however it is read
        world.service.create(world.editor, definition("d"), CTX)
