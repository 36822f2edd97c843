"""Claims and recovery on an in-memory store with in-memory leases (milliseconds).
Recovery reads only the executors' leases and each run's own events: it recovers a
running attempt whose executor went silent, and drops a lease whose attempt is not
running (a claim that died before it was saved) without touching the run. The tenant's
max_concurrent_runs is a Usage the claim takes from and the run's way out of running
gives back, exactly, across executor processes."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest

from application.errors import QuotaExceeded
from application.event_store import NornEventStore
from application.executor import RunExecutor
from application.recovery import RunRecovery
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.run import Run, Trigger
from domain.tenant import Quotas, Tenant
from tests.support.memory import StoreUsage, memory_store

CTX = CommandContext("user:u1", "corr-1")
TIMEOUT = 60.0


class Leases:
    """application.ports.Heartbeats in memory, with its own clock."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.rows: dict[str, tuple[int, str, float]] = {}

    def lease(self, run_id: str, attempt: int, executor_id: str) -> None:
        held = self.rows.get(run_id)
        if held is None or held[0] <= attempt:
            self.rows[run_id] = (attempt, executor_id, self.now)

    async def beat(self, run_id: str, attempt: int, executor_id: str) -> None:
        self.lease(run_id, attempt, executor_id)

    async def stop(self, run_id: str, attempt: int) -> None:
        if self.rows.get(run_id, (None,))[0] == attempt:
            del self.rows[run_id]

    async def drop_stale(self, run_id: str, attempt: int, older_than: float) -> None:
        held = self.rows.get(run_id)
        if held is not None and held[0] == attempt and held[2] < self.now - older_than:
            del self.rows[run_id]

    async def stale(self, older_than: float, limit: int) -> list[tuple[str, int]]:
        old = [(r, a) for r, (a, _, at) in self.rows.items() if at < self.now - older_than]
        return old[:limit]


def tenant_of(store: NornEventStore, max_concurrent_runs: int = 10) -> str:
    tenant = Tenant.create(
        tenant_id=uuid4(),
        name=f"t-{uuid4().hex[:6]}",
        description="",
        plan="free",
        labels={},
        ctx=CTX,
    )
    tenant.set_quotas(Quotas(max_concurrent_runs=max_concurrent_runs), CTX)
    store.append(tenant)
    return tenant.tenant_id


def executor(store: NornEventStore, leases: Leases, name: str = "executor-a") -> RunExecutor:
    """An executor process as far as claims and saves go (no steps run here)."""
    return RunExecutor(store, None, leases, StoreUsage(store), executor_id=name)  # type: ignore[arg-type]


def queued_run(store: NornEventStore, tenant_id: str | None = None) -> Run:
    definition = PipelineDefinition(
        name="p", steps=(StepSpec("read", "Input.file", {"path": "in.jsonl"}),)
    )
    run = Run.queue(
        run_id=uuid4(),
        tenant_id=tenant_id or str(uuid4()),
        pipeline_id=str(uuid4()),
        pipeline_name="p",
        revision=1,
        definition=definition,
        params={},
        trigger=Trigger("user", "u1"),
        ctx=CTX,
        max_attempts=3,
    )
    store.append(run)
    return run


def running_used(x: RunExecutor, tenant_id: str) -> int | None:
    return x.ledger.used(tenant_id, "max_concurrent_runs")


async def test_a_silent_executors_attempt_is_queued_again_and_its_lease_dropped() -> None:
    store, leases = memory_store(), Leases()
    x = executor(store, leases)
    tenant_id = tenant_of(store)
    run = queued_run(store, tenant_id)
    assert x.claim(run.id) is not None
    assert running_used(x, tenant_id) == 1
    recovery = RunRecovery(store, leases, timeout=TIMEOUT, save=x.save)

    assert await recovery.sweep() == []  # beaten just now
    leases.now += TIMEOUT + 1
    assert await recovery.sweep() == [(str(run.id), "queued")]
    assert store.load(Run, run.id, "run").status == "queued"
    assert leases.rows == {}
    assert running_used(x, tenant_id) == 0  # given back in the recovery's append


async def test_a_claim_that_died_before_it_was_saved_leaves_only_a_lease_to_drop() -> None:
    store, leases = memory_store(), Leases()
    run = queued_run(store)
    leases.lease(str(run.id), 1, "executor-dead")  # then died before its append
    version = store.load(Run, run.id, "run").version
    leases.now += TIMEOUT + 1

    recovery = RunRecovery(store, leases, timeout=TIMEOUT, save=executor(store, leases).save)
    assert await recovery.sweep() == []
    after = store.load(Run, run.id, "run")
    assert (after.status, after.version) == ("queued", version)
    assert leases.rows == {}


def test_claims_past_max_concurrent_runs_are_refused_until_a_run_leaves_running() -> None:
    store, leases = memory_store(), Leases()
    x = executor(store, leases)
    tenant_id = tenant_of(store, max_concurrent_runs=2)
    runs = [queued_run(store, tenant_id) for _ in range(3)]
    first, _ = (x.claim(r.id) for r in runs[:2])
    with pytest.raises(QuotaExceeded):
        x.claim(runs[2].id)
    assert store.load(Run, runs[2].id, "run").status == "queued"
    assert first is not None
    run = store.load(Run, first.run.id, "run")
    run.release(first.attempt, "shutting down", CTX)  # out of running: queued again
    x.save(run, was_running=True)
    assert running_used(x, tenant_id) == 1
    assert x.claim(runs[2].id) is not None
    assert running_used(x, tenant_id) == 2


def test_racing_executor_processes_never_run_more_than_the_limit() -> None:
    store, leases = memory_store(), Leases()
    tenant_id = tenant_of(store, max_concurrent_runs=3)
    runs = [queued_run(store, tenant_id) for _ in range(10)]
    executors = [executor(store, leases, f"executor-{i}") for i in range(3)]
    claimed: list[bool] = []

    def claim(i: int) -> None:
        try:
            claimed.append(executors[i % 3].claim(runs[i].id) is not None)
        except QuotaExceeded:
            claimed.append(False)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running = [r for r in runs if store.load(Run, r.id, "run").status == "running"]
    assert claimed.count(True) == len(running) == 3
    assert running_used(executors[0], tenant_id) == 3


def test_a_claim_whose_usage_another_executor_changed_is_tried_again_and_succeeds() -> None:
    store, leases = memory_store(), Leases()
    tenant_id = tenant_of(store, max_concurrent_runs=10)
    here, there = executor(store, leases, "here"), executor(store, leases, "there")
    runs = [queued_run(store, tenant_id) for _ in range(4)]
    for i, run in enumerate(runs):  # each one's kept usage is stale after the other's claim
        assert (here if i % 2 else there).claim(run.id) is not None
    assert running_used(here, tenant_id) == 4
