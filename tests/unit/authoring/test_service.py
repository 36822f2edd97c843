"""AuthoringService on an in-memory event store: a draft validated as POST /pipelines
validates, problems turned into questions keyed as hints answer them, hints taken, and
a generator plugged in through a real `norn.generators` entry point."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import msgspec
import pytest

from application.authoring.ports import GenerationRequest
from application.authoring.service import AuthoringService
from application.errors import NotFound, ServiceUnavailable
from application.pipelines import PipelineService
from application.principal import Principal
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.tenant import Tenant
from infrastructure.authoring_catalog import GeneratorNotFound, load_generator
from infrastructure.plugins.builtin import BUILTIN_PLUGINS
from infrastructure.plugins.catalog import PluginCatalog
from tests.support.memory import StoreUsage, memory_store
from tests.unit.authoring.catalogs import EXTENDED, WarehouseInput

CTX = CommandContext("user:u1", "corr-1")
PROVIDER = '''
from application.authoring.ports import Draft
from domain.pipeline import PipelineDefinition, StepSpec


class Echo:
    """A provider as a language model's would be, minus the model: its draft names a
    path that leaves the tenant's folder, which validation must catch."""

    def generate(self, request, plugins):
        assert any(p.ref == "Input.file" for p in plugins)
        step = StepSpec("read", "Input.file", {"path": "/etc/passwd"})
        return Draft(PipelineDefinition(name=request.name or "echo", steps=(step,)))


class Broken:
    def generate(self, request, plugins):
        raise RuntimeError("the model is down")
'''


class World:
    def __init__(self) -> None:
        self.store = memory_store()
        plugins = PluginCatalog((*BUILTIN_PLUGINS, WarehouseInput))
        self.pipelines = PipelineService(self.store, plugins, StoreUsage(self.store))
        tenant = Tenant.create(
            tenant_id=uuid4(), name="acme", description="", plan="free", labels={}, ctx=CTX
        )
        self.store.append(tenant)
        self.viewer = Principal(
            "u1", "vi", tenant.tenant_id, frozenset({"viewer"}), tenant_status="active", plan="free"
        )

    def service(self, generator: object = None) -> AuthoringService:
        return AuthoringService(self.pipelines, EXTENDED, generator)  # type: ignore[arg-type]


@pytest.fixture
def world() -> World:
    return World()


def test_a_draft_is_validated_and_saves_nothing(world: World) -> None:
    before = len(world.store.recorder.select_notifications(start=None, limit=100))  # type: ignore[attr-defined]
    done = world.service().generate(
        world.viewer, GenerationRequest("read orders.csv, keep only paid orders, write paid.csv")
    )
    assert done.valid and done.draft.questions == []
    after = len(world.store.recorder.select_notifications(start=None, limit=100))  # type: ignore[attr-defined]
    assert after == before


def test_missing_config_is_one_question_keyed_as_the_hint_that_answers_it(world: World) -> None:
    service = world.service()
    asked = service.generate(
        world.viewer, GenerationRequest("load the snowflake warehouse table users")
    )
    assert not asked.valid
    keys = [q.key for q in asked.draft.questions]
    assert keys.count("query.dsn") == 1 and "destination" in keys
    answered = service.generate(
        world.viewer,
        GenerationRequest(
            "load the snowflake warehouse table users",
            hints={"query.dsn": "postgresql://db.internal/app", "destination": "users.jsonl"},
        ),
    )
    assert answered.valid and answered.draft.questions == []
    read, write = answered.draft.definition.steps
    assert read.config == {"dsn": "postgresql://db.internal/app", "table": "users"}
    assert write.config == {"path": "users.jsonl"} and write.depends_on == ("query",)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[None]:
    """A package registering two generators, found the way an installed one is: its
    dist-info on sys.path."""
    (tmp_path / "norn_test_provider.py").write_text(PROVIDER)
    info = tmp_path / "norn_test_provider-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: norn-test-provider\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[norn.generators]\necho = norn_test_provider:Echo\nbroken = norn_test_provider:Broken\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("norn_test_provider", None)


def test_a_provider_draft_is_validated_like_any_other(world: World, provider: None) -> None:
    done = world.service(load_generator("echo")).generate(
        world.viewer, GenerationRequest("anything", name="mine")
    )
    assert not done.valid and done.draft.definition.name == "mine"
    assert [q.key for q in done.draft.questions] == ["read.path"]
    assert "relative to the tenant's folder" in done.draft.questions[0].question
    with pytest.raises(ServiceUnavailable):
        world.service(load_generator("broken")).generate(world.viewer, GenerationRequest("x"))
    with pytest.raises(GeneratorNotFound):
        load_generator("nope")


def test_regenerate_and_describe_load_only_what_the_principal_sees(world: World) -> None:
    editor = Principal(
        "u2", "ed", world.viewer.tenant_id, frozenset({"editor"}), tenant_status="active",
        plan="free",
    )  # fmt: skip
    definition = PipelineDefinition(
        name="p", steps=(StepSpec("read", "Input.file", {"path": "in.jsonl"}),)
    )
    created = world.pipelines.create(editor, definition, CTX)
    done = world.service().regenerate(world.viewer, created.state.id, "write to out.csv")
    assert done.base_revision == 1 and done.checked.valid
    assert done.changes["steps_added"] == ["write"]
    stranger = Principal("u3", "x", str(uuid4()), frozenset({"admin"}), tenant_status="active")
    with pytest.raises(NotFound):
        world.service().regenerate(stranger, created.state.id, "write to out.csv")
    encoded = msgspec.json.encode(world.service().describe(created.state, [], []))
    assert b"reads jsonl records from the file in.jsonl" in encoded
