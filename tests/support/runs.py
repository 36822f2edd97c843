"""Runs on an in-memory event store, executed by the real RunExecutor with the real
PluginStepRunner (its workspaces and the tenants' folders under pytest's tmp_path) and the
Test plugins: the service-level tests of run execution, recovery and run quotas. What is
not real here is only the persistence (tests/support/memory.py), the heartbeats
(PostgreSQL rows in production) and the log lines (a PostgreSQL table), all kept in
memory; no NATS (a claim and an execution are called directly, as the executor role
calls them for a work item)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from application.executor import Claim, RunExecutor
from application.pipelines import PipelineService
from application.principal import Principal
from application.quotas import UsageLedger
from application.recovery import RunRecovery
from application.run_execution import ExecutorPolicy
from application.runs import RunService
from application.secrets import SecretService
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.run import Run
from domain.tenant import Quotas, Tenant
from domain.usage import SHARDS
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.secret_store import MasterKeys, new_master_key
from infrastructure.step_runner import PluginStepRunner
from tests.support.memory import (
    MemorySecretReferences,
    MemorySecretValues,
    StoreUsage,
    memory_store,
    pending_events,
)
from tests.support.plugins import TEST_PLUGINS

CTX = CommandContext("user:u1", "corr-1")
DEADLINE = 20.0
"""Seconds an execution may take before the test fails (a bound, never a timing)."""


class MemoryHeartbeats:
    """application.ports.Heartbeats as infrastructure/heartbeats.py decides it: a lease
    per run, written at the claim before its append and renewed by beats; stale when not
    renewed within `older_than`; a beat or lease of an earlier attempt never replaces a
    later one's. Time moves only when a test says so (`later`); the beats of a `muted`
    executor are lost (one that is slow or cut off, not dead)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._beats: dict[str, tuple[int, str, datetime]] = {}
        self._offset = timedelta()
        self.run_ids: list[UUID] = []
        self.muted: set[str] = set()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def later(self, seconds: float) -> None:
        """Move this clock on: every beat and lease so far is that much older."""
        self._offset += timedelta(seconds=seconds)

    def lease(self, run_id: str, attempt: int, executor_id: str) -> None:
        current = self._beats.get(run_id)
        if current is None or current[0] <= attempt:
            self._beats[run_id] = (attempt, executor_id, self.now())

    async def beat(self, run_id: str, attempt: int, executor_id: str) -> None:
        if executor_id not in self.muted:
            self.lease(run_id, attempt, executor_id)

    async def stop(self, run_id: str, attempt: int) -> None:
        if run_id in self._beats and self._beats[run_id][0] == attempt:
            del self._beats[run_id]

    async def drop_stale(self, run_id: str, attempt: int, older_than: float) -> None:
        held = self._beats.get(run_id)
        if held is not None and held[0] == attempt and held[2] < self._cutoff(older_than):
            del self._beats[run_id]

    async def stale(self, older_than: float, limit: int) -> list[tuple[str, int]]:
        cutoff = self._cutoff(older_than)
        found = [(r, a) for r, (a, _, at) in self._beats.items() if at < cutoff]
        return found[:limit]

    def _cutoff(self, older_than: float) -> datetime:
        return self.now() - timedelta(seconds=older_than)


class MemoryStepLog:
    def __init__(self, lines: list[dict[str, Any]], run_id: str, step: str, attempt: int):
        self._lines, self._key = lines, {"run_id": run_id, "step": step, "attempt": attempt}

    def line(self, level: str, message: str) -> None:
        self._lines.append({**self._key, "level": level, "message": message})

    async def flush(self) -> None:
        pass


class MemoryRunLogs:
    """The writer side of infrastructure/run_logs.py, kept in a list."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def writer(self, run_id: str, step: str, attempt: int) -> MemoryStepLog:
        return MemoryStepLog(self.lines, run_id, step, attempt)

    def of(self, run_id: UUID, step: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line["run_id"] == str(run_id) and step in (None, line["step"])
        ]


def step(
    name: str, plugin: str, *depends_on: str, config: dict[str, Any] | None = None, **fields: Any
) -> StepSpec:
    return StepSpec(name, plugin, config or {}, tuple(depends_on), **fields)


class RunWorld:
    """One tenant with an editor, its pipelines and runs, and executors over one store."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        max_attempts: int = 3,
        heartbeat_timeout: float = 30.0,
        **quotas: int,
    ) -> None:
        self.run_ended: Callable[[Run], object] | None = None
        """What executors tell of the runs of deployments they end (looked up late)."""
        self.store = memory_store()
        self.appends: list[tuple[set[UUID], list[str]]] = []
        self.reads: Counter[UUID] = Counter()
        # Before the services: they keep the store's append and find as they find them.
        self._record_appends_and_reads()
        self.usage = StoreUsage(self.store)
        self._shards: dict[str, int] = {}
        catalog = PluginCatalog.with_entry_points(tuple(TEST_PLUGINS.split(",")))
        self.pipelines = PipelineService(self.store, catalog, self.usage)
        self.runs = RunService(self.store, self.pipelines, self.usage, max_attempts=max_attempts)
        self.secrets = SecretService(
            self.store, MemorySecretValues(MasterKeys([new_master_key()])), MemorySecretReferences()
        )
        self.steps = PluginStepRunner(
            catalog,
            workspace_root=tmp_path / "runs",
            files_root=tmp_path / "files",
            logs=MemoryRunLogs(),  # type: ignore[arg-type]
            secrets=self.secrets,
        )
        self.logs: MemoryRunLogs = self.steps._logs  # type: ignore[assignment]
        self.heartbeats = MemoryHeartbeats(self.store)
        self.recovery = RunRecovery(
            self.store,
            self.heartbeats,
            timeout=heartbeat_timeout,
            save=self.executor("recovery").save,
        )
        tenant = Tenant.create(
            tenant_id=uuid4(), name="acme", description="", plan="enterprise", labels={}, ctx=CTX
        )
        if quotas:
            tenant.set_quotas(Quotas(**quotas), CTX)
        self.store.append(tenant)
        self.tenant_id = tenant.tenant_id
        self.files = tmp_path / "files" / self.tenant_id
        self.editor = Principal(
            "u1", "ada", self.tenant_id, frozenset({"editor"}), tenant_status="active"
        )

    def _record_appends_and_reads(self) -> None:
        """Every successful append (the aggregates it saved and its events, in order),
        and how many finds of each aggregate have returned."""
        append, find = self.store.append, self.store.find

        def counting(cls: Any, aggregate_id: UUID) -> Any:
            found = find(cls, aggregate_id)
            self.reads[aggregate_id] += 1
            return found

        self.store.find = counting  # type: ignore[method-assign]

        def recording(*aggregates: Any, **options: Any) -> int | None:
            events = pending_events(aggregates)
            names = [type(e).__name__ for e in events]
            position = append(*aggregates, **options)
            if names:
                self.appends.append(({e.originator_id for e in events}, names))
            return position

        self.store.append = recording  # type: ignore[method-assign]

    def executor(self, name: str = "executor-a", heartbeat_interval: float = 0.05) -> RunExecutor:
        """An executor process: its own usage shard, one per name."""
        shard = self._shards.setdefault(name, len(self._shards) % SHARDS)
        executor = RunExecutor(
            self.store,
            self.steps,
            self.heartbeats,
            self.usage,
            executor_id=name,
            policy=ExecutorPolicy(heartbeat_interval=heartbeat_interval),
            run_ended=lambda run: self.run_ended(run) if self.run_ended else None,
        )
        executor.ledger = UsageLedger(self.store, self.usage, shard=shard)
        return executor

    def pipeline(self, name: str, *steps: StepSpec, **fields: Any) -> UUID:
        created = self.pipelines.create(
            self.editor, PipelineDefinition(name=name, steps=steps, **fields), CTX
        )
        return created.state.id

    def trigger(self, pipeline_id: UUID, **params: Any) -> UUID:
        run = self.runs.trigger(self.editor, pipeline_id, params=params, ctx=CTX).state
        self.heartbeats.run_ids.append(run.id)
        return run.id

    def claim(self, run_id: UUID, executor: RunExecutor | None = None) -> Claim | None:
        return (executor or self.executor()).claim(run_id)

    async def execute(self, run_id: UUID, executor: RunExecutor | None = None) -> Run:
        """Claim the run and execute it to its end (as the executor role does for its
        work item); the run as stored afterwards."""
        executor = executor or self.executor()
        claim = await asyncio.to_thread(executor.claim, run_id)
        assert claim is not None, f"run {run_id} could not be claimed"
        await asyncio.wait_for(executor.execute(claim), DEADLINE)
        return self.run(run_id)

    def run(self, run_id: UUID) -> Run:
        found = self.store.find(Run, run_id)
        assert found is not None
        return found

    def events(self, run_id: UUID) -> list[tuple[str, Any]]:
        """(class name, event) of the run's events, in order."""
        return [(type(e).__name__, e) for e in self.store.stream(run_id)]

    def names(self, run_id: UUID) -> list[str]:
        return [name for name, _ in self.events(run_id)]

    def appends_of(self, run_id: UUID) -> list[list[str]]:
        return [names for ids, names in self.appends if run_id in ids]

    def marks(self) -> list[tuple[str, str]]:
        """(run id, step) of each execution of a Test.mark step, in order."""
        path = self.files / "marks.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return [tuple(line.split(" ", 1)) for line in lines]  # type: ignore[misc]


async def until(check: Callable[[], bool], what: str) -> None:
    """Until `check()` holds (state the executor's tasks change); fails after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


def statuses(run: Run) -> dict[str, str]:
    return {name: state.status for name, state in run.steps.items()}


def index(events: Sequence[tuple[str, Any]], name: str, step_name: str) -> int:
    return next(i for i, (n, e) in enumerate(events) if n == name and e.step == step_name)
