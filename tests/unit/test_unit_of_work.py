"""Commands staged in a unit of work (application/unit_of_work.py): nothing is stored
until the commit, which stores everything in one append; later commands see what earlier
ones decided; a unit dropped or beaten by a concurrent change stores nothing."""

from __future__ import annotations

from uuid import UUID

import msgspec
import pytest

from application.errors import QuotaExceeded, VersionConflict
from application.unit_of_work import PENDING, UnitOfWork, staging
from domain.errors import Conflict, InvalidDefinition, NameTaken
from domain.pipeline import Pipeline, PipelineDefinition
from domain.tenant import Tenant
from tests.unit.test_pipeline_service import CTX, World, another_process, definition, usage_of


def test_staged_commands_store_nothing_until_one_commit_stores_all() -> None:
    world = World()
    before = world.stored()
    unit = UnitOfWork()
    with staging(unit):
        created = world.service.create(world.editor, definition("orders"), CTX)
        # The next command loads what the first decided, not the store (where it is not).
        revised = world.service.revise(
            world.editor, created.state.id, definition("orders-v2"), CTX, expected_version=1
        )
        other = world.service.create(world.editor, definition("refunds"), CTX)
    assert (created.position, revised.position, other.position) == (PENDING,) * 3
    assert revised.version == 2
    assert world.stored() == before
    position = unit.commit(world.store)
    appended = world.stored()[len(before) :]
    assert position == len(world.stored())  # the one append's last event
    assert appended.count("PipelineCreated") == 2 and appended.count("PipelineRevised") == 1
    # The process's usage shard took both pipelines: refilled (and the main usage
    # counted) once, in the same append, taken twice.
    assert appended.count("UsageCounted") == 1 and appended.count("UsageShardGranted") == 1
    assert appended.count("UsageShardTaken") == 2
    stored = world.store.load(Pipeline, created.state.id, "pipeline")
    assert (stored.version, stored.definition.name) == (2, "orders-v2")


def test_a_dropped_unit_stores_nothing_and_leaves_the_quota_as_it_was() -> None:
    world = World(max_pipelines=2)
    world.service.create(world.editor, definition("first"), CTX)
    before = world.stored()
    with staging(UnitOfWork()):
        world.service.create(world.editor, definition("second"), CTX)
        with pytest.raises(QuotaExceeded):  # sees the take staged just before
            world.service.create(world.editor, definition("third"), CTX)
    assert world.stored() == before
    # What the dropped unit took was never taken: one more still fits, and only one.
    world.service.create(world.editor, definition("second"), CTX)
    with pytest.raises(QuotaExceeded):
        world.service.create(world.editor, definition("third"), CTX)


def test_a_name_taken_earlier_in_the_unit_is_taken() -> None:
    world = World()
    with staging(UnitOfWork()):
        world.service.create(world.editor, definition("orders"), CTX)
        with pytest.raises(NameTaken):
            world.service.create(world.editor, definition("orders"), CTX)


def test_a_concurrent_change_beats_the_commit_and_nothing_is_stored() -> None:
    world = World()
    made = world.service.create(world.editor, definition("orders"), CTX)
    unit = UnitOfWork()
    with staging(unit):
        world.service.create(world.editor, definition("refunds"), CTX)
        world.service.revise(world.editor, made.state.id, definition("orders-v2"), CTX)
    world.service.revise(world.editor, made.state.id, definition("orders-elsewhere"), CTX)
    before = world.stored()
    with pytest.raises(VersionConflict):
        unit.commit(world.store)
    assert world.stored() == before
    assert world.store.load(Pipeline, made.state.id, "pipeline").definition.name == (
        "orders-elsewhere"
    )


def test_a_second_copy_of_a_kept_aggregate_is_refused() -> None:
    world = World()
    made = world.service.create(world.editor, definition("orders"), CTX)
    unit = UnitOfWork()
    with staging(unit):
        world.service.revise(world.editor, made.state.id, definition("orders-v2"), CTX)
        copy = world.store.repository.get(made.state.id)  # around the unit: a stale copy
        copy.revise(definition("orders-v3"), lambda step: [], CTX, ())
        with pytest.raises(Conflict):
            world.store.append(copy)


def test_a_version_made_in_the_unit_cannot_be_read_before_the_commit() -> None:
    world = World()
    made = world.service.create(world.editor, definition("orders"), CTX)
    with staging(UnitOfWork()):
        world.service.revise(world.editor, made.state.id, definition("orders-v2"), CTX)
        assert world.store.load(Pipeline, made.state.id, "pipeline", version=1).version == 1
        with pytest.raises(Conflict):
            world.store.load(Pipeline, made.state.id, "pipeline", version=2)


def test_the_commit_holds_and_checks_the_namespaces_its_pipelines_are_placed_in() -> None:
    world = World()
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    tenant.add_namespace("prod", CTX)
    world.store.append(tenant)
    unit = UnitOfWork()
    with staging(unit):
        world.service.create(world.editor, placed("orders", "prod"), CTX)
    # Removed after the command checked it, before the commit: the commit checks again.
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    tenant.remove_namespace("prod", CTX)
    world.store.append(tenant)
    before = world.stored()
    with pytest.raises(InvalidDefinition):
        unit.commit(world.store)
    assert world.stored() == before


def placed(name: str, namespace: str) -> PipelineDefinition:
    return msgspec.structs.replace(definition(name), namespace=namespace)


def test_a_batch_decides_on_the_stored_shard_not_a_copy_another_process_made_stale() -> None:
    world = World(max_pipelines=10)
    other = another_process(world)
    world.service.create(world.editor, definition("here"), CTX)  # keeps its shard's copy
    # The other process creates up to the edge, where its refill reclaims every shard's
    # free units: this process's too, behind the copy it keeps.
    for i in range(8):
        other.create(world.editor, definition(f"there-{i}"), CTX)
    assert "UsageReclaimed" in world.stored()
    unit = UnitOfWork()
    with staging(unit):
        world.service.create(world.editor, definition("last"), CTX)
    unit.commit(world.store)  # not a VersionConflict: an atomic batch cannot retry
    assert usage_of(world) == 10
