"""The Pipeline aggregate: given these events, when this command, then these events (or
this error). Pure domain: no I/O, plugins checked by a fake at the edge, and also by
the real built-in plugin catalog."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from application.pipeline_history import summarize_changes
from domain.errors import AggregateDeleted, InvalidCommand, InvalidDefinition
from domain.events import CommandContext, NornEvent
from domain.pipeline import (
    ClonedFrom,
    Pipeline,
    PipelineCreated,
    PipelineDefinition,
    PipelineDeleted,
    PipelineRevised,
    PipelineRolledBack,
    StepSpec,
    find_cycle,
)
from infrastructure.plugins.catalog import PluginCatalog

CTX = CommandContext("user:u1", "corr-1")
TENANT = "tenant-1"

# --- a fake plugin checker at the edge: (plugin, config) -> ["field: message"] ---------

_REQUIRED = {
    "Input.file": ("path",),
    "Output.file": ("path",),
    "Data_Processing.filter": ("expression",),
}


def fake_plugins(step: StepSpec) -> list[str]:
    if step.plugin not in _REQUIRED:
        return [f"plugin: unknown plugin {step.plugin!r}"]
    required = _REQUIRED[step.plugin]
    return [f"config.{name}: required" for name in required if name not in step.config]


def accept_all(step: StepSpec) -> list[str]:
    return []


# --- builders ---------------------------------------------------------------------------


def step(name: str, *depends_on: str, plugin: str = "Input.file", **config: Any) -> StepSpec:
    if plugin == "Input.file" and not config:
        config = {"path": f"{name}.jsonl"}
    return StepSpec(name=name, plugin=plugin, config=config, depends_on=depends_on)


def definition(name: str = "orders", *steps: StepSpec, **kwargs: Any) -> PipelineDefinition:
    return PipelineDefinition(name=name, steps=steps or (step("extract"),), **kwargs)


V1 = PipelineDefinition(
    name="orders",
    description="daily orders",
    tags=("sales",),
    steps=(
        step("extract"),
        step("clean", "extract", plugin="Data_Processing.filter", expression="amount > 0"),
        step("load", "clean", plugin="Output.file", path="out/orders.jsonl"),
    ),
)
V2 = PipelineDefinition(
    name="orders",
    description="daily orders, v2",
    tags=("sales",),
    steps=V1.steps,
)
V3 = PipelineDefinition(
    name="orders-renamed",
    description="daily orders, v3",
    tags=("sales", "eu"),
    steps=V1.steps[:2],
)


def create(
    pipeline_id: UUID | None = None,
    definition: PipelineDefinition = V1,
    ctx: CommandContext = CTX,
    **kwargs: Any,
) -> Pipeline:
    return Pipeline.create(
        pipeline_id=pipeline_id or uuid4(),
        tenant_id=TENANT,
        definition=definition,
        check_plugin=fake_plugins,
        ctx=ctx,
        **kwargs,
    )


def history(*revisions: PipelineDefinition) -> list[NornEvent]:
    """Events of a pipeline created with the first definition and revised to the others."""
    pipeline = create(definition=revisions[0])
    for revision in revisions[1:]:
        pipeline.revise(revision, fake_plugins, CTX)
    return pipeline.collect_events()


def given(events: list[NornEvent]) -> Pipeline:
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Pipeline)
    return aggregate


def errors_of(invalid: pytest.ExceptionInfo[InvalidDefinition]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in invalid.value.errors:
        found.setdefault(error.field, []).append(error.message)
    return found


# --- create -----------------------------------------------------------------------------


def test_create_records_pipeline_created_with_the_definition_and_revision_1() -> None:
    pipeline_id = uuid4()

    pipeline = create(pipeline_id, V1)

    [event] = pipeline.collect_events()
    assert isinstance(event, PipelineCreated)
    assert event.originator_id == pipeline_id
    assert event.originator_version == 1
    assert event.definition == V1
    assert event.cloned_from is None
    assert event.tenant_id == TENANT
    assert (pipeline.revision, pipeline.definition, pipeline.deleted) == (1, V1, False)
    assert pipeline.revision_versions == {1: 1}


def test_create_as_a_clone_records_where_it_was_cloned_from() -> None:
    origin = ClonedFrom(pipeline_id=str(uuid4()), revision=3)

    pipeline = create(definition=V1, cloned_from=origin)

    [event] = pipeline.collect_events()
    assert event.cloned_from == origin
    assert pipeline.cloned_from == origin


def test_events_replayed_from_a_sequence_rebuild_the_same_pipeline() -> None:
    events = history(V1, V2, V3)

    pipeline = given(events)

    assert [type(e) for e in events] == [PipelineCreated, PipelineRevised, PipelineRevised]
    assert (pipeline.revision, pipeline.version, pipeline.definition) == (3, 3, V3)
    assert pipeline.tenant_id == TENANT


@pytest.mark.parametrize("name", ["", "   "])
def test_create_rejects_an_empty_name(name: str) -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition(name))

    assert errors_of(invalid) == {"name": ["must not be empty"]}


def test_create_rejects_a_name_longer_than_200_characters() -> None:
    create(definition=definition("n" * 200))  # the limit itself is fine

    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("n" * 201))

    assert list(errors_of(invalid)) == ["name"]


def test_create_rejects_blank_and_overlong_tags() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", tags=("ok", " ", "t" * 101)))

    assert list(errors_of(invalid)) == ["tags[1]", "tags[2]"]


def test_create_refuses_nul_anywhere_in_the_definition_and_names_every_place() -> None:
    nul = definition(
        "or\x00ders",
        step("extract", path="in\x00.jsonl"),
        step("load", "extract", plugin="Output.file", **{"pa\x00th": "x", "path": ["ok", "\x00"]}),
        tags=("ok", "t\x00"),
    )
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=nul)

    assert errors_of(invalid) == {
        "name": ["must not contain the NUL character"],
        "steps[0].config.path": ["must not contain the NUL character"],
        "steps[1].config": ["keys must not contain the NUL character"],
        "steps[1].config.path[1]": ["must not contain the NUL character"],
        "tags[1]": ["must not contain the NUL character"],
    }


def test_revise_refuses_nul_and_records_nothing() -> None:
    pipeline = given(history(V1))

    with pytest.raises(InvalidDefinition):
        pipeline.revise(definition("orders", description="a\x00b"), fake_plugins, CTX)

    assert pipeline.collect_events() == []
    assert pipeline.revision == 1


def test_create_rejects_a_pipeline_without_steps() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=PipelineDefinition(name="empty", steps=()))

    assert errors_of(invalid) == {"steps": ["a pipeline needs at least one step"]}


def test_create_rejects_duplicate_step_names() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("extract"), step("other"), step("extract")))

    assert errors_of(invalid) == {"steps[2].name": ["duplicate step name 'extract'"]}


@pytest.mark.parametrize("name", ["", "-leading-dash", ".hidden", "has space", "a/b", "x" * 101])
def test_create_rejects_a_bad_step_name(name: str) -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("ok"), step(name)))

    assert list(errors_of(invalid)) == ["steps[1].name"]


@pytest.mark.parametrize("name", ["a", "_x", "Extract_2", "load.v2", "x-y", "x" * 100])
def test_create_accepts_good_step_names(name: str) -> None:
    pipeline = create(definition=definition("p", step(name)))

    assert pipeline.definition.steps[0].name == name


def test_create_rejects_a_step_name_with_a_trailing_newline() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("extract\n")))

    assert list(errors_of(invalid)) == ["steps[0].name"]


def test_create_rejects_a_dependency_on_an_unknown_step() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("extract"), step("load", "extrakt")))

    assert errors_of(invalid) == {"steps[1].depends_on": ["unknown step 'extrakt'"]}


def test_create_rejects_a_step_that_depends_on_itself() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("extract"), step("loop", "loop")))

    # A self-dependency is reported once, not also as a cycle.
    assert errors_of(invalid) == {"steps[1].depends_on": ["a step cannot depend on itself"]}


def test_create_rejects_a_cycle_of_two_steps_and_names_its_path() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("a", "b"), step("b", "a")))

    assert errors_of(invalid) == {"steps": ["dependency cycle: a -> b -> a"]}


def test_create_rejects_a_cycle_of_three_steps_and_names_its_path() -> None:
    steps = (step("start"), step("a", "start", "c"), step("b", "a"), step("c", "b"))

    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", *steps))

    assert errors_of(invalid) == {"steps": ["dependency cycle: a -> c -> b -> a"]}


def test_create_rejects_an_unknown_plugin() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", step("x", plugin="Input.ftp", host="h")))

    assert errors_of(invalid) == {"steps[0].plugin": ["unknown plugin 'Input.ftp'"]}


def test_create_rejects_a_step_missing_required_config() -> None:
    bad = StepSpec(name="extract", plugin="Input.file", config={})

    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=definition("p", bad))

    assert errors_of(invalid) == {"steps[0].config.path": ["required"]}


def test_create_lists_every_problem_at_once() -> None:
    steps = (
        StepSpec(name="extract", plugin="Input.file", config={}),
        step("bad name"),
        step("extract"),
        step("load", "nowhere", plugin="Output.sftp"),
        step("a", "b"),
        step("b", "a"),
    )

    with pytest.raises(InvalidDefinition) as invalid:
        create(definition=PipelineDefinition(name=" ", steps=steps))

    assert errors_of(invalid) == {
        "name": ["must not be empty"],
        "steps[0].config.path": ["required"],
        "steps[1].name": ["1-100 of letters, digits, '_', '-', '.'"],
        "steps[2].name": ["duplicate step name 'extract'"],
        "steps[3].plugin": ["unknown plugin 'Output.sftp'"],
        "steps[3].depends_on": ["unknown step 'nowhere'"],
        "steps": ["dependency cycle: a -> b -> a"],
    }
    # The exception's text carries every problem too (it is what a log line shows).
    assert "steps[3].plugin: unknown plugin 'Output.sftp'" in str(invalid.value)
    assert "name: must not be empty" in str(invalid.value)


# --- validation through the real plugin catalog -----------------------------------------

CATALOG = PluginCatalog()


def create_with_catalog(*steps: StepSpec) -> Pipeline:
    return Pipeline.create(
        pipeline_id=uuid4(),
        tenant_id=TENANT,
        definition=PipelineDefinition(name="real", steps=steps),
        check_plugin=CATALOG.check_step,
        ctx=CTX,
    )


def test_catalog_accepts_a_valid_pipeline_of_builtin_plugins() -> None:
    pipeline = create_with_catalog(
        StepSpec("extract", "Input.file", {"path": "in/orders.csv", "format": "csv"}),
        StepSpec("keep", "Data_Processing.filter", {"expression": "amount > 10"}, ("extract",)),
        StepSpec("shape", "Data_Processing.transform", {"drop": ["secret"]}, ("keep",)),
        StepSpec("load", "Output.webhook", {"url": "https://example.test/hook"}, ("shape",)),
    )

    assert [s.name for s in pipeline.definition.steps] == ["extract", "keep", "shape", "load"]


def test_catalog_input_file_without_path_is_reported_at_the_steps_config_path() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create_with_catalog(StepSpec("extract", "Input.file", {}))

    assert errors_of(invalid) == {"steps[0].config.path": ["required"]}


def test_catalog_problems_of_several_steps_are_listed_together() -> None:
    with pytest.raises(InvalidDefinition) as invalid:
        create_with_catalog(
            StepSpec("extract", "Input.file", {"path": "../../etc/passwd"}),
            StepSpec("shape", "Data_Processing.transform", {}),
            StepSpec("load", "Output.file", {"path": "out.jsonl", "colour": "red"}),
            StepSpec("send", "Output.carrier_pigeon", {}),
        )

    assert errors_of(invalid) == {
        "steps[0].config.path": ["must be relative to the tenant's folder, without '..'"],
        "steps[1].config": ["set 'fields' or 'drop'"],
        "steps[2].config.colour": ["unknown field"],
        "steps[3].plugin": [
            "unknown plugin 'Output.carrier_pigeon'; see GET /api/v1/plugins",
        ],
    }


# --- revise -----------------------------------------------------------------------------


def test_revise_records_the_next_revision() -> None:
    pipeline = given(history(V1))

    changed = pipeline.revise(V2, fake_plugins, CommandContext("user:u2", "corr-2"))

    assert changed is True
    [event] = pipeline.collect_events()
    assert isinstance(event, PipelineRevised)
    assert (event.revision, event.originator_version, event.definition) == (2, 2, V2)
    assert (event.actor, event.correlation_id) == ("user:u2", "corr-2")
    assert (pipeline.revision, pipeline.definition) == (2, V2)
    assert pipeline.revision_versions == {1: 1, 2: 2}


def test_revise_with_an_identical_definition_records_nothing() -> None:
    pipeline = given(history(V1, V2))

    changed = pipeline.revise(V2, fake_plugins, CTX)

    assert changed is False
    assert pipeline.collect_events() == []
    assert (pipeline.revision, pipeline.version) == (2, 2)


def test_revise_validates_the_new_definition() -> None:
    pipeline = given(history(V1))

    with pytest.raises(InvalidDefinition) as invalid:
        pipeline.revise(definition("p", step("a", "b"), step("b", "a")), fake_plugins, CTX)

    assert errors_of(invalid) == {"steps": ["dependency cycle: a -> b -> a"]}
    assert pipeline.collect_events() == []
    assert pipeline.revision == 1


def test_revise_of_a_deleted_pipeline_is_refused() -> None:
    pipeline = given(history(V1))
    pipeline.delete(CTX)
    pipeline.collect_events()

    with pytest.raises(AggregateDeleted):
        pipeline.revise(V2, fake_plugins, CTX)

    assert pipeline.collect_events() == []


# --- roll back --------------------------------------------------------------------------


def test_roll_back_to_an_earlier_revision_records_a_new_revision_with_its_definition() -> None:
    pipeline = given(history(V1, V2, V3))

    pipeline.roll_back(1, V1, CommandContext("user:u3", "corr-3", "cause-3"))

    [event] = pipeline.collect_events()
    assert isinstance(event, PipelineRolledBack)
    assert event.revision == 4
    assert event.rolled_back_to == 1
    assert event.previous_revision == 3
    assert event.definition == V1
    assert event.originator_version == 4
    assert (event.actor, event.correlation_id, event.causation_id) == (
        "user:u3",
        "corr-3",
        "cause-3",
    )
    assert (pipeline.revision, pipeline.definition) == (4, V1)
    assert pipeline.revision_versions == {1: 1, 2: 2, 3: 3, 4: 4}


def test_a_rolled_back_revision_can_itself_be_rolled_back_to() -> None:
    pipeline = given(history(V1, V2, V3))
    pipeline.roll_back(1, V1, CTX)
    pipeline.revise(V2, fake_plugins, CTX)
    pipeline.collect_events()

    pipeline.roll_back(4, V1, CTX)

    [event] = pipeline.collect_events()
    assert (event.revision, event.rolled_back_to, event.previous_revision) == (6, 4, 5)


def test_roll_back_to_the_current_revision_is_refused() -> None:
    pipeline = given(history(V1, V2))

    with pytest.raises(InvalidCommand) as refused:
        pipeline.roll_back(2, V2, CTX)

    assert refused.value.field == "revision"
    assert "already the current one" in str(refused.value)
    assert pipeline.collect_events() == []


@pytest.mark.parametrize("revision", [0, 3, 99, -1])
def test_roll_back_to_a_revision_that_does_not_exist_is_refused(revision: int) -> None:
    pipeline = given(history(V1, V2))

    with pytest.raises(InvalidCommand) as refused:
        pipeline.roll_back(revision, V1, CTX)

    assert refused.value.field == "revision"
    assert str(refused.value) == f"revision {revision} does not exist (latest is 2)"
    assert pipeline.collect_events() == []


def test_roll_back_of_a_deleted_pipeline_is_refused() -> None:
    pipeline = given(history(V1, V2))
    pipeline.delete(CTX)

    with pytest.raises(AggregateDeleted):
        pipeline.roll_back(1, V1, CTX)


def test_revision_versions_map_each_revision_to_the_aggregate_version_that_made_it() -> None:
    events = history(V1, V2)
    pipeline = given(events)
    pipeline.roll_back(1, V1, CTX)
    pipeline.delete(CTX)
    events += pipeline.collect_events()

    rebuilt = given(events)

    assert rebuilt.revision_versions == {1: 1, 2: 2, 3: 3}
    assert rebuilt.version == 4  # the delete moved the version, not the revision
    assert rebuilt.revision == 3
    assert [rebuilt.version_of_revision(r) for r in (1, 2, 3)] == [1, 2, 3]
    with pytest.raises(InvalidCommand):
        rebuilt.version_of_revision(4)


# --- delete -----------------------------------------------------------------------------


def test_delete_records_pipeline_deleted() -> None:
    pipeline = given(history(V1, V2))

    pipeline.delete(CTX)

    [event] = pipeline.collect_events()
    assert isinstance(event, PipelineDeleted)
    assert event.originator_version == 3
    assert event.tenant_id == TENANT
    assert pipeline.deleted is True
    assert pipeline.revision == 2  # a delete is not a revision


def test_delete_twice_is_refused() -> None:
    pipeline = given(history(V1))
    pipeline.delete(CTX)
    pipeline.collect_events()

    with pytest.raises(AggregateDeleted):
        pipeline.delete(CTX)

    assert pipeline.collect_events() == []


# --- metadata on every event ------------------------------------------------------------


def test_every_pipeline_event_carries_tenant_actor_correlation_and_causation() -> None:
    ctx = CommandContext("apikey:k9", "corr-9", "cause-9")
    pipeline = create(definition=V1, ctx=ctx)
    pipeline.revise(V2, fake_plugins, ctx)
    pipeline.roll_back(1, V1, ctx)
    pipeline.delete(ctx)

    events = pipeline.collect_events()

    assert [type(e) for e in events] == [
        PipelineCreated,
        PipelineRevised,
        PipelineRolledBack,
        PipelineDeleted,
    ]
    for event in events:
        assert event.originator_id == pipeline.id
        assert event.tenant_id == TENANT
        assert event.actor == "apikey:k9"
        assert event.correlation_id == "corr-9"
        assert event.causation_id == "cause-9"
        assert event.timestamp.tzinfo is not None
    assert [e.originator_version for e in events] == [1, 2, 3, 4]


def test_causation_id_defaults_to_none() -> None:
    [event] = create(ctx=CommandContext("user:u1", "corr-1")).collect_events()

    assert event.causation_id is None


@pytest.mark.parametrize(
    ("event_class", "type_name"),
    [
        (PipelineCreated, "norn.pipeline.created.v1"),
        (PipelineRevised, "norn.pipeline.revised.v1"),
        (PipelineRolledBack, "norn.pipeline.rolled_back.v1"),
        (PipelineDeleted, "norn.pipeline.deleted.v1"),
    ],
)
def test_pipeline_event_type_names(event_class: type[NornEvent], type_name: str) -> None:
    assert event_class.type_name() == type_name


# --- find_cycle -------------------------------------------------------------------------


def test_find_cycle_finds_none_in_a_dag_with_shared_dependencies() -> None:
    # A diamond: d is reached twice, which is not a cycle.
    steps = (step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))

    assert find_cycle(steps) is None


def test_find_cycle_returns_the_path_with_the_first_node_repeated() -> None:
    assert find_cycle((step("x", "y"), step("y", "x"))) == ["x", "y", "x"]
    assert find_cycle((step("a", "b"), step("b", "c"), step("c", "a"))) == ["a", "b", "c", "a"]


def test_find_cycle_finds_a_cycle_not_reachable_from_the_first_step() -> None:
    steps = (step("root"), step("leaf", "root"), step("p", "q"), step("q", "r"), step("r", "p"))

    assert find_cycle(steps) == ["p", "q", "r", "p"]


def test_find_cycle_ignores_self_and_unknown_dependencies() -> None:
    assert find_cycle((step("a", "a", "ghost"), step("b", "a"))) is None


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    names = [f"s{i}" for i in range(3000)]
    chain = tuple(step(n, *([names[i - 1]] if i else [])) for i, n in enumerate(names))

    assert find_cycle(chain) is None
    closed = (step("s0", names[-1]), *chain[1:])
    cycle = find_cycle(closed)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 3001


# --- summarize_changes ------------------------------------------------------------------


def test_summarize_changes_of_the_first_revision_lists_every_step_as_added() -> None:
    assert summarize_changes(None, V1) == {
        "steps_added": ["extract", "clean", "load"],
        "steps_removed": [],
        "steps_changed": [],
        "fields_changed": [],
    }


def test_summarize_changes_of_identical_definitions_is_empty() -> None:
    assert summarize_changes(V1, V1) == {
        "steps_added": [],
        "steps_removed": [],
        "steps_changed": [],
        "fields_changed": [],
    }


def test_summarize_changes_lists_added_removed_and_changed_steps_and_fields() -> None:
    after = PipelineDefinition(
        name="orders-2",
        description=V1.description,
        tags=("sales", "eu"),
        steps=(
            step("extract", path="other.jsonl"),  # config changed
            step("clean", plugin="Data_Processing.filter", expression="amount > 0"),  # deps
            step("notify", "clean", plugin="Output.file", path="n.jsonl"),  # added
        ),  # "load" removed
    )

    assert summarize_changes(V1, after) == {
        "steps_added": ["notify"],
        "steps_removed": ["load"],
        "steps_changed": ["extract", "clean"],
        "fields_changed": ["name", "tags"],
    }


def test_summarize_changes_reports_a_description_change() -> None:
    assert summarize_changes(V1, V2)["fields_changed"] == ["description"]
    assert summarize_changes(V1, V2)["steps_changed"] == []
