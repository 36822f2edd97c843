"""What a tenant's quotas and status do to its runs, at the service level
(tests/support/runs.py): max_concurrent_runs holds across executors and a freed slot is
taken by the run waiting for it, max_runs_per_day refuses the trigger past it, a
suspended tenant's runs wait queued until it is reactivated, a deleted tenant's are
cancelled, and of executors racing for one run exactly one claims it.
tests/integration/test_run_executors.py checks the same holds across executor processes
competing over NATS."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from uuid import UUID

import pytest

from application.errors import QuotaExceeded
from application.executor import TenantSuspended
from domain.tenant import Tenant
from tests.support.runs import CTX, DEADLINE, RunWorld, step


def tenant(world: RunWorld) -> Tenant:
    return world.store.load(Tenant, UUID(world.tenant_id), "tenant")


async def test_max_concurrent_runs_holds_across_executors_and_a_freed_slot_is_taken(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path, max_concurrent_runs=1)
    pipeline_id = world.pipeline("slow", step("nap", "Test.sleep", config={"seconds": 3600}))
    running_id, waiting_id = world.trigger(pipeline_id), world.trigger(pipeline_id)
    first, second = world.executor("executor-a"), world.executor("executor-b")
    claim = await asyncio.to_thread(first.claim, running_id)
    assert claim is not None
    executing = asyncio.create_task(first.execute(claim))

    with pytest.raises(QuotaExceeded) as refused:
        second.claim(waiting_id)

    assert (refused.value.limit, refused.value.used) == (1, 1)
    assert world.names(waiting_id) == ["RunQueued"]  # waits, queued
    world.runs.cancel(world.editor, running_id, CTX)
    assert await asyncio.wait_for(executing, DEADLINE) == "cancelled"
    taken = second.claim(waiting_id)  # the slot is free again
    assert taken is not None and world.run(waiting_id).executor_id == "executor-b"


def test_max_runs_per_day_refuses_the_trigger_past_it_and_stores_nothing(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path, max_runs_per_day=2)
    pipeline_id = world.pipeline("p", step("e", "Test.emit"))
    for _ in range(2):
        world.trigger(pipeline_id)
    stored = len(world.appends)

    with pytest.raises(QuotaExceeded) as refused:
        world.trigger(pipeline_id)

    assert (refused.value.quota, refused.value.limit, refused.value.used) == (
        "max_runs_per_day",
        2,
        2,
    )
    assert len(world.appends) == stored


async def test_a_suspended_tenants_runs_wait_queued_until_it_is_reactivated(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path)
    run_id = world.trigger(world.pipeline("p", step("mark", "Test.mark")))
    suspended = tenant(world)
    suspended.suspend("invoice unpaid", CTX)
    world.store.append(suspended)

    with pytest.raises(TenantSuspended):
        world.claim(run_id)

    assert world.names(run_id) == ["RunQueued"] and world.marks() == []
    reactivated = tenant(world)
    reactivated.reactivate(CTX)
    world.store.append(reactivated)
    assert (await world.execute(run_id)).status == "succeeded"
    assert world.marks() == [(str(run_id), "mark")]


def test_a_deleted_tenants_run_is_cancelled_instead_of_claimed(tmp_path: Path) -> None:
    world = RunWorld(tmp_path)
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    deleted = tenant(world)
    deleted.delete(CTX)
    world.store.append(deleted)

    assert world.claim(run_id) is None

    run = world.run(run_id)
    assert (run.status, run.error) == ("cancelled", "its tenant was deleted")


def test_of_executors_racing_for_one_run_exactly_one_claims_it(tmp_path: Path) -> None:
    world = RunWorld(tmp_path)
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    executors = [world.executor(f"executor-{n}") for n in range(6)]
    claims: list[object] = []
    start = threading.Barrier(len(executors))

    def claim(executor: object) -> None:
        start.wait()
        claims.append(executor.claim(run_id))  # type: ignore[attr-defined]

    threads = [threading.Thread(target=claim, args=(e,)) for e in executors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len([c for c in claims if c is not None]) == 1
    assert world.names(run_id).count("RunStarted") == 1
    assert world.run(run_id).status == "running"
