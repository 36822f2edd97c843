"""Usage escrow (domain/usage.py, application/quotas.py): each process takes from its own
shard of a tenant's usage, refilled from the main usage; processes on different shards
never race on a take, and at the quota's edge every shard's free units are reclaimed so
that the decision is exact. Domain rules first (given these events, this command), then
the ledger through the pipeline service on the in-memory store, a process being a
service with a ledger of its own."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from application.errors import QuotaExceeded
from application.quotas import SHARD_ENV, process_shard
from domain.errors import ShardShort
from domain.events import CommandContext
from domain.tenant import Quotas, Tenant
from domain.usage import SHARDS, Usage, UsageShard
from tests.support.refused_appends import RefusedAppends
from tests.unit.test_pipeline_service import World, another_process, definition, usage_of

CTX = CommandContext("user:u1", "corr-shards")


def main_at(used: int) -> Usage:
    return Usage.start(tenant_id="t", resource="pipelines", period="", used=used, ctx=CTX)


def shard_with(free: int, limit: int = 10, n: int = 0) -> UsageShard:
    shard = UsageShard.open(tenant_id="t", resource="pipelines", period="", shard=n, ctx=CTX)
    if free:
        shard.grant(free, limit, CTX)
    return shard


def new_topics(aggregate: Any) -> list[str]:
    return [type(event).__name__ for event in aggregate.collect_events()]


# Domain: given a shard / main usage, a command yields these events or this error.


def test_a_shard_takes_from_its_free_units_only() -> None:
    shard = shard_with(free=2)
    shard.collect_events()
    shard.take(2, 10, CTX)
    assert (new_topics(shard), shard.free) == (["UsageShardTaken"], 0)
    with pytest.raises(ShardShort):
        shard.take(1, 10, CTX)


def test_a_shard_does_not_spend_units_allotted_under_a_higher_limit() -> None:
    shard = shard_with(free=5, limit=10)
    with pytest.raises(ShardShort):
        shard.take(1, 9, CTX)
    shard.take(1, 11, CTX)  # a raised limit leaves them good
    assert shard.free == 4


def test_a_release_frees_a_unit_in_the_shard() -> None:
    shard = shard_with(free=0)
    shard.release(2, CTX)
    assert shard.free == 2


def test_the_main_allots_up_to_the_limit_and_reclaims_a_shards_free_units() -> None:
    main, shard = main_at(7), shard_with(free=0, n=3)
    with pytest.raises(QuotaExceeded) as refused:
        main.allot(3, 4, 10, "max_pipelines", CTX)
    assert refused.value.used == 7
    main.allot(3, 3, 10, "max_pipelines", CTX)
    shard.grant(3, 10, CTX)
    shard.take(1, 10, CTX)
    main.reclaim(shard, CTX)
    assert (main.used, shard.free) == (8, 0)  # 7 held before, 1 taken from the shard
    assert new_topics(shard)[-1] == "UsageShardReturned"


def test_a_reclaim_never_counts_below_zero() -> None:
    main, shard = main_at(0), shard_with(free=0)
    shard.release(1, CTX)  # of something counted before usage was kept, since removed
    main.reclaim(shard, CTX)
    assert main.used == 0


# The ledger: processes, each a service with its own shard.


def test_processes_on_different_shards_never_race_on_a_take() -> None:
    world = World(max_pipelines=1000)
    other = another_process(world)
    refused = RefusedAppends(world.store.recorder)
    for i in range(20):  # alternating: each create follows one of the other process
        world.service.create(world.editor, definition(f"here-{i}"), CTX)
        other.create(world.editor, definition(f"there-{i}"), CTX)
    assert refused.count == 0
    assert usage_of(world) == 40
    # One refill each (the first), not one per create.
    assert world.stored().count("UsageAllotted") == 2


def test_at_the_edge_another_shards_free_units_are_reclaimed_and_the_limit_is_exact() -> None:
    world = World(max_pipelines=10)
    other = another_process(world)
    world.service.create(world.editor, definition("here"), CTX)  # allotted spare units
    made = 0
    with pytest.raises(QuotaExceeded) as refused:
        while True:
            other.create(world.editor, definition(f"there-{made}"), CTX)
            made += 1
    assert made == 9 and (refused.value.used, refused.value.limit) == (10, 10)
    assert "UsageReclaimed" in world.stored()
    with pytest.raises(QuotaExceeded):
        world.service.create(world.editor, definition("here-again"), CTX)
    assert usage_of(world) == 10


def test_a_unit_freed_in_one_process_is_taken_in_another_at_the_edge() -> None:
    world = World(max_pipelines=3)
    second, third = another_process(world), another_process(world, n=2)
    made = [world.service.create(world.editor, definition(f"p{i}"), CTX) for i in range(3)]
    second.delete(world.editor, made[0].state.id, CTX)  # free in the second's shard
    third.create(world.editor, definition("fits"), CTX)
    assert usage_of(world) == 3
    with pytest.raises(QuotaExceeded):
        second.create(world.editor, definition("full"), CTX)


def test_a_lowered_limit_is_decided_on_the_whole_usage_not_on_spare_units() -> None:
    world = World(max_pipelines=100)
    for i in range(3):
        world.service.create(world.editor, definition(f"p{i}"), CTX)  # spare units kept
    tenant = world.store.load(Tenant, UUID(world.tenant_id), "tenant")
    tenant.set_quotas(Quotas(max_pipelines=3), CTX)
    world.store.append(tenant)
    with pytest.raises(QuotaExceeded) as refused:
        world.service.create(world.editor, definition("over"), CTX)
    assert refused.value.used == 3


def test_a_release_into_a_new_shard_starts_the_count_first() -> None:
    world = World(max_pipelines=5)
    made = world.service.create(world.editor, definition("a"), CTX)
    other = another_process(world)
    other.delete(world.editor, made.state.id, CTX)
    assert usage_of(world) == 0
    assert world.stored().count("UsageCounted") == 1


def test_shards_are_chosen_within_range() -> None:
    world = World()
    assert 0 <= world.service.ledger.shard < SHARDS
    with pytest.raises(ValueError):
        UsageShard.open(tenant_id="t", resource="r", period="", shard=SHARDS, ctx=CTX)


def test_processes_on_other_hosts_or_with_other_pids_mostly_take_other_shards() -> None:
    containers = {process_shard(f"norn-api-{n}", 1) for n in range(8)}  # each as pid 1
    processes = {process_shard("box", pid) for pid in range(4000, 4008)}
    assert len(containers) >= 5 and len(processes) >= 5
    assert all(0 <= shard < SHARDS for shard in containers | processes)


def test_a_shard_norn_serve_gave_the_process_is_its_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHARD_ENV, "7")
    assert process_shard() == 7
    assert process_shard("box", 4000) == process_shard("box", 4000)  # the hash when asked
    for bad in ("16", "-1", "seven"):
        monkeypatch.setenv(SHARD_ENV, bad)
        with pytest.raises(ValueError, match=SHARD_ENV):
            process_shard()


def test_a_refill_that_lost_to_another_process_on_its_shard_takes_from_that_refill() -> None:
    world = World(max_pipelines=1000)
    other = another_process(world, same_shard=True)
    recorder = world.store.recorder
    insert = recorder.insert_events  # type: ignore[attr-defined]
    raced: list[bool] = []

    def racing(stored_events: Any, **kwargs: Any) -> Any:
        if not raced and any(e.topic.endswith("UsageAllotted") for e in stored_events):
            raced.append(True)  # the other process refills the same shard first
            other.create(world.editor, definition("there"), CTX)
        return insert(stored_events, **kwargs)

    recorder.insert_events = racing  # type: ignore[attr-defined]
    world.service.create(world.editor, definition("here"), CTX)
    assert raced and usage_of(world) == 2
    assert world.stored().count("UsageAllotted") == 1  # the other's refill served both


def test_a_shard_short_of_units_is_refilled_from_its_kept_copy_not_read_again() -> None:
    """Read again, the shard would be a replay of every take since its last refill (a
    hundred or so under load); the copy the process kept is the stored one once its
    appends are in."""
    world = World(max_pipelines=1000)
    world.service.create(world.editor, definition("first"), CTX)
    granted = world.stored().count("UsageShardGranted")
    recorder = world.store.recorder
    select = recorder.select_events  # type: ignore[attr-defined]
    shard_reads: list[UUID] = []

    def counting(originator_id: UUID, **kwargs: Any) -> Any:
        found = select(originator_id, **kwargs)
        if any(event.topic.endswith("UsageShardOpened") for event in found):
            shard_reads.append(originator_id)
        return found

    recorder.select_events = counting  # type: ignore[attr-defined]
    made = 1
    while world.stored().count("UsageShardGranted") == granted:  # until the next refill
        world.service.create(world.editor, definition(f"p{made}"), CTX)
        made += 1
    assert shard_reads == []
    assert usage_of(world) == made
