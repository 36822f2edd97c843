"""Usage shards (domain/usage.py, application/quotas.py) on real PostgreSQL, with two
processes as two event stores of their own (their own pools and caches) and two
ledgers on different shards, each creating pipelines of one tenant from six threads:
away from the limit no append is refused for a race at all; at the limit exactly the
quota is created, every refusal names the full count, and neither shard has a hole in
its versions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from application.errors import QuotaExceeded
from application.event_store import NornEventStore
from application.pipelines import PipelineService
from application.principal import Principal
from application.quotas import UsageLedger
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.tenant import Quotas, Tenant
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.postgres import open_event_store
from projections.usage import ReadModelUsage
from tests.conftest import seed_tenant
from tests.support.refused_appends import RefusedAppends

CTX = CommandContext("user:u1", "corr-shards")
THREADS = 6


def definition(name: str) -> PipelineDefinition:
    return PipelineDefinition(name=name, steps=(StepSpec("read", "Input.file", {"path": "x"}),))


class Process:
    """One API process: its own event store, counting the appends refused for a race."""

    def __init__(self, database_url: str, usage: ReadModelUsage, shard: int) -> None:
        self.store: NornEventStore = open_event_store(database_url, pool_size=THREADS)
        self.refused = RefusedAppends(self.store.recorder)
        self.ledger = UsageLedger(self.store, usage, shard=shard)
        self.service = PipelineService(self.store, PluginCatalog(), usage, ledger=self.ledger)


@pytest.fixture
def processes(database_url: str, usage: ReadModelUsage) -> Iterator[list[Process]]:
    made = [Process(database_url, usage, shard) for shard in (3, 11)]
    yield made
    for process in made:
        process.store.close()


def tenant_with(store: NornEventStore, max_pipelines: int) -> tuple[str, Principal]:
    tenant_id = uuid.uuid4()
    seed_tenant(store, tenant_id, f"shards-{tenant_id.hex[:8]}")
    tenant = store.load(Tenant, tenant_id, "tenant")
    tenant.set_quotas(Quotas(max_pipelines=max_pipelines), CTX)
    store.append(tenant)
    editor = Principal(
        "u1", "ada", str(tenant_id), frozenset({"editor"}), tenant_status="active", plan="free"
    )
    return str(tenant_id), editor


def create_from_threads(processes: list[Process], editor: Principal, each: int) -> list[str]:
    outcomes: list[str] = []

    def create(process: Process, worker: int) -> None:
        for i in range(each):
            name = f"s{process.ledger.shard}-w{worker}-{i}"
            try:
                process.service.create(editor, definition(name), CTX)
                outcomes.append("created")
            except QuotaExceeded as refused:
                outcomes.append(f"refused {refused.used} of {refused.limit}")

    threads = [
        threading.Thread(target=create, args=(process, worker))
        for process in processes
        for worker in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    return outcomes


def shard_versions(database_url: str, process: Process, tenant_id: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT originator_version FROM norn_events WHERE originator_id = %s"
            " ORDER BY originator_version",
            (process.ledger.key(tenant_id, "max_pipelines"),),
        )
        return [row[0] for row in rows]


def test_two_processes_on_their_own_shards_never_race_away_from_the_limit(
    processes: list[Process], database_url: str
) -> None:
    tenant_id, editor = tenant_with(processes[0].store, max_pipelines=10_000)
    # Each shard's first refill, one process after the other: both start from the main
    # usage, where two processes that start at once race (one append refused, retried).
    for process in processes:
        process.service.create(editor, definition(f"first-{process.ledger.shard}"), CTX)
        process.refused.count = 0
    outcomes = create_from_threads(processes, editor, each=10)
    assert outcomes == ["created"] * 2 * THREADS * 10
    assert [p.refused.count for p in processes] == [0, 0]
    assert processes[0].ledger.used(tenant_id, "max_pipelines") == 2 * THREADS * 10 + 2


def test_two_processes_at_the_limit_create_exactly_the_quota(
    processes: list[Process], database_url: str
) -> None:
    tenant_id, editor = tenant_with(processes[0].store, max_pipelines=50)
    outcomes = create_from_threads(processes, editor, each=8)  # 96 asked
    assert outcomes.count("created") == 50
    assert set(outcomes) == {"created", "refused 50 of 50"}
    assert processes[1].ledger.used(tenant_id, "max_pipelines") == 50
    for process in processes:
        versions = shard_versions(database_url, process, tenant_id)
        assert versions == list(range(1, len(versions) + 1))
