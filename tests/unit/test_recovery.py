"""RunRecovery on an in-memory store with in-memory leases (milliseconds): recovery reads
only the executors' leases and each run's own events, recovers a running attempt whose
executor went silent, and drops a lease whose attempt is not running (a claim that died
before it was saved) without touching the run."""

from __future__ import annotations

from uuid import uuid4

from application.event_store import NornEventStore
from application.recovery import RunRecovery
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.run import Run, Trigger
from tests.support.memory import memory_store

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


def queued_run(store: NornEventStore) -> Run:
    definition = PipelineDefinition(
        name="p", steps=(StepSpec("read", "Input.file", {"path": "in.jsonl"}),)
    )
    run = Run.queue(
        run_id=uuid4(),
        tenant_id=str(uuid4()),
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


async def test_a_silent_executors_attempt_is_queued_again_and_its_lease_dropped() -> None:
    store, leases = memory_store(), Leases()
    run = queued_run(store)
    attempt = run.start("executor-a", CTX)
    leases.lease(str(run.id), attempt, "executor-a")
    store.append(run)
    recovery = RunRecovery(store, leases, timeout=TIMEOUT)

    assert await recovery.sweep() == []  # beaten just now
    leases.now += TIMEOUT + 1
    assert await recovery.sweep() == [(str(run.id), "queued")]
    assert store.load(Run, run.id, "run").status == "queued"
    assert leases.rows == {}


async def test_a_claim_that_died_before_it_was_saved_leaves_only_a_lease_to_drop() -> None:
    store, leases = memory_store(), Leases()
    run = queued_run(store)
    leases.lease(str(run.id), 1, "executor-dead")  # then died before its append
    version = store.load(Run, run.id, "run").version
    leases.now += TIMEOUT + 1

    assert await RunRecovery(store, leases, timeout=TIMEOUT).sweep() == []
    after = store.load(Run, run.id, "run")
    assert (after.status, after.version) == ("queued", version)
    assert leases.rows == {}
