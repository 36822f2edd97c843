"""Group commit (application/group_commit.py) on real PostgreSQL: one tenant's creates
from 16 threads are stored in fewer appends than creates, a duplicate name among them
fails only itself (the store names the claim that lost), the usage shard they take
from has no hole in its versions, and the usage counts exactly what exists."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg

from application.event_store import NornEventStore
from application.pipelines import PipelineService
from application.principal import Principal
from domain.errors import NameTaken
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from infrastructure.plugins.catalog import PluginCatalog
from projections.usage import ReadModelUsage
from tests.conftest import seed_tenant

CTX = CommandContext("user:u1", "corr-group")
THREADS = 16
EACH = 12


def definition(name: str) -> PipelineDefinition:
    return PipelineDefinition(name=name, steps=(StepSpec("read", "Input.file", {"path": "x"}),))


def test_one_tenants_concurrent_creates_share_appends_and_count_exactly(
    event_store: NornEventStore, usage: ReadModelUsage, database_url: str
) -> None:
    tenant_id = uuid.uuid4()
    seed_tenant(event_store, tenant_id, f"group-{tenant_id.hex[:8]}")
    editor = Principal(
        "u1", "ada", str(tenant_id), frozenset({"editor"}), tenant_status="active", plan="free"
    )
    service = PipelineService(event_store, PluginCatalog(), usage)
    service.create(editor, definition("taken"), CTX)
    appends: list[int] = []
    insert = event_store.recorder.insert_events

    def counted(stored_events: Any, **kwargs: Any) -> Any:
        appends.append(len(stored_events))
        return insert(stored_events, **kwargs)

    event_store.recorder.insert_events = counted  # type: ignore[method-assign]
    outcomes: list[str] = []

    def create(worker: int) -> None:
        for i in range(EACH):
            name = "taken" if (worker, i) == (3, 5) else f"w{worker}-{i}"
            try:
                service.create(editor, definition(name), CTX)
                outcomes.append("created")
            except NameTaken:
                outcomes.append("taken")

    threads = [threading.Thread(target=create, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()

    created = THREADS * EACH - 1
    assert sorted(set(outcomes)) == ["created", "taken"]
    assert outcomes.count("created") == created and outcomes.count("taken") == 1
    assert len(appends) < created  # some appends carried several creates
    key = service.ledger.key(str(tenant_id), "max_pipelines")  # this process's shard
    with psycopg.connect(database_url) as conn:
        versions = [
            row[0]
            for row in conn.execute(
                "SELECT originator_version FROM norn_events WHERE originator_id = %s"
                " ORDER BY originator_version",
                (key,),
            )
        ]
    assert versions == list(range(1, len(versions) + 1))
    assert service.ledger.used(str(tenant_id), "max_pipelines") == created + 1
