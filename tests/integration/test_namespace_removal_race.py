"""A pipeline cannot land in a namespace that is being removed: the removal holds the
namespace exclusively while it counts what is in it; placing a pipeline holds it shared
and checks, once it holds it, that the namespace still exists."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from application.event_store import NornEventStore
from application.pipelines import PipelineService
from application.principal import Principal
from application.tenants import TenantService
from domain.errors import InvalidDefinition
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from infrastructure.plugins.catalog import PluginCatalog
from projections.usage import ReadModelUsage
from tests.conftest import seed_tenant

CTX = CommandContext("user:u1", "corr-1")


def test_a_create_waiting_on_a_removal_sees_the_namespace_gone(
    event_store: NornEventStore, usage: ReadModelUsage
) -> None:
    tenant_id = uuid.uuid4()
    seed_tenant(event_store, tenant_id, "acme")
    admin = Principal("u1", "root", None, frozenset({"platform_admin"}))
    editor = Principal("u2", "ed", str(tenant_id), frozenset({"editor"}), tenant_status="active")
    tenants = TenantService(event_store, usage)
    pipelines = PipelineService(event_store, PluginCatalog(), usage)
    tenants.add_namespace(admin, tenant_id, "prod", CTX)
    definition = PipelineDefinition(
        name="nightly",
        namespace="prod",
        steps=(StepSpec("read", "Input.file", {"path": "in.jsonl"}),),
    )

    # A removal in progress: it holds the namespace while it counts and removes.
    holding, release = threading.Event(), threading.Event()

    def removal_in_progress() -> None:
        with usage.namespace_hold(str(tenant_id), "prod", exclusive=True):
            holding.set()
            release.wait(10)
            # Still holding: nothing is in the namespace, so it goes.
            tenants.remove_namespace(admin, tenant_id, "prod", CTX)

    with ThreadPoolExecutor(2) as pool:
        remover = pool.submit(removal_in_progress)
        assert holding.wait(10)
        creator = pool.submit(pipelines.create, editor, definition, CTX)
        assert not creator.done()  # it waits for the namespace
        release.set()
        remover.result(timeout=10)
        with pytest.raises(InvalidDefinition) as refused:
            creator.result(timeout=10)
    assert [e.field for e in refused.value.errors] == ["namespace"]
    assert "prod" not in tenants.load(admin, tenant_id).namespaces
