"""Event-triggered runs through the real services on the in-memory store: one pipeline's
success starts another's run exactly once, a chain stops at depth 5 (recorded), a
quota's refusal is recorded, and another tenant's pipeline never fires."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import JSONTranscoder, Notification

from application.event_triggers import EventTriggers, Firing, TenantEvent
from domain.errors import InvalidDefinition
from domain.event_trigger import (
    MAX_CHAIN_DEPTH,
    EventTrigger,
    TriggerFired,
    TriggerFiring,
    TriggerRefused,
    firing_id,
    triggered_run_id,
)
from domain.events import NornEvent
from domain.pipeline import PipelineDefinition
from domain.run import Run
from domain.tenant import Tenant
from infrastructure.envelope import to_cloud_event
from infrastructure.mapper import MsgspecMapper
from infrastructure.trigger_role import tenant_event
from tests.support.deployments import World
from tests.support.runs import CTX, step

MAPPER = MsgspecMapper(JSONTranscoder())


class Triggers(World):
    def __init__(self, tmp_path: Path, **quotas: int) -> None:
        super().__init__(tmp_path, **quotas)
        self.triggers = EventTriggers(self.store, self.runs)
        self.position = 0
        self.upstream = self.pipeline("upstream", step("e", "Test.emit"))

    def downstream(self, *triggers: EventTrigger, name: str = "downstream") -> UUID:
        return self.pipeline(name, step("e", "Test.emit"), triggers=triggers)

    def on_success_of(self, pipeline_id: UUID, **params: Any) -> EventTrigger:
        return EventTrigger("norn.run.succeeded", {"pipeline_id": str(pipeline_id)}, params)

    def last_event(self, aggregate_id: UUID) -> TenantEvent:
        """The aggregate's newest event as the trigger role reads it from the store."""
        event: NornEvent = self.store.stream(aggregate_id)[-1]
        stored = MAPPER.to_stored_event(event)
        self.position += 1
        cloud = to_cloud_event(
            Notification(
                id=self.position,
                originator_id=stored.originator_id,
                originator_version=stored.originator_version,
                topic=stored.topic,
                state=stored.state,
            )
        )
        return tenant_event(cloud)

    def handle(
        self, event: TenantEvent, pipelines: list[UUID], deployments: Sequence[UUID] = ()
    ) -> list[Firing]:
        """The trigger role's hand-over: the nominated pipelines and deployments."""
        targets = [("pipeline", p) for p in pipelines] + [("deployment", d) for d in deployments]
        return self.triggers.handle(event, targets)

    async def ran(self, pipeline_id: UUID) -> TenantEvent:
        run_id = self.trigger(pipeline_id)
        await self.execute(run_id)
        return self.last_event(run_id)


@pytest.fixture
def world(tmp_path: Path) -> Triggers:
    return Triggers(tmp_path)


async def test_a_success_starts_the_triggered_pipeline_once(world: Triggers) -> None:
    downstream = world.downstream(world.on_success_of(world.upstream, day="today"))
    succeeded = await world.ran(world.upstream)

    [firing] = world.handle(succeeded, [downstream, world.upstream])
    again = world.handle(succeeded, [downstream])  # read again after a crash

    assert again == []
    run_id = triggered_run_id(str(downstream), succeeded.id)
    assert firing.run_id == str(run_id) and firing.refused is None
    run = world.run(run_id)
    assert (run.trigger.kind, run.trigger.id, run.trigger.depth) == ("event", succeeded.id, 1)
    assert run.params == {"day": "today"} and run.pipeline_id == str(downstream)
    [recorded] = world.store.stream(firing_id(str(downstream), succeeded.id))
    assert isinstance(recorded, TriggerFired) and recorded.run_id == str(run_id)
    assert recorded.event_type == "norn.run.succeeded.v1" and recorded.depth == 1
    assert ["RunQueued", "TriggerFired", "UsageShardTaken"] in [sorted(n) for _, n in world.appends]


async def test_only_the_events_a_trigger_names_start_a_run(world: Triggers) -> None:
    other = world.pipeline("other", step("e", "Test.emit"))
    failing = world.pipeline("failing", step("f", "Test.fail", config={"retryable": False}))
    downstream = world.downstream(
        world.on_success_of(world.upstream), EventTrigger("norn.run.*", {"pipeline_id": "x"})
    )

    assert world.handle(await world.ran(other), [downstream]) == []
    failed = await world.ran(failing)
    assert failed.type == "norn.run.failed.v1"
    assert world.handle(failed, [downstream]) == []


async def test_a_chain_of_triggered_runs_stops_at_depth_five_and_says_so(
    world: Triggers,
) -> None:
    looping = world.pipeline("looping", step("e", "Test.emit"))
    world.pipelines.revise(
        world.editor,
        looping,
        PipelineDefinition(
            name="looping",
            steps=(step("e", "Test.emit"),),
            triggers=(world.on_success_of(looping),),
        ),
        CTX,
    )
    event = await world.ran(looping)
    depths = []
    for _ in range(MAX_CHAIN_DEPTH):
        [firing] = world.handle(event, [looping])
        assert firing.run_id is not None
        run_id = UUID(firing.run_id)
        depths.append(world.run(run_id).trigger.depth)
        await world.execute(run_id)
        event = world.last_event(run_id)

    [cut] = world.handle(event, [looping])

    assert depths == [1, 2, 3, 4, 5]
    assert cut.run_id is None and cut.refused == "CHAIN_TOO_DEEP"
    [refused] = world.store.stream(firing_id(str(looping), event.id))
    assert isinstance(refused, TriggerRefused) and refused.depth == MAX_CHAIN_DEPTH + 1
    assert "depth 5" in refused.reason
    assert world.store.find(Run, triggered_run_id(str(looping), event.id)) is None


async def test_a_trigger_refused_by_the_day_quota_is_recorded(tmp_path: Path) -> None:
    world = Triggers(tmp_path, max_runs_per_day=1)
    downstream = world.downstream(world.on_success_of(world.upstream))
    succeeded = await world.ran(world.upstream)  # the day's one run

    [refused] = world.handle(succeeded, [downstream])

    assert refused.refused == "QUOTA_EXCEEDED" and refused.run_id is None
    firing = world.store.find(TriggerFiring, firing_id(str(downstream), succeeded.id))
    assert firing is not None and firing.refused and "max_runs_per_day" in firing.refused


async def test_another_tenants_pipeline_is_never_fired(world: Triggers) -> None:
    stranger_tenant = Tenant.create(
        tenant_id=uuid4(), name="globex", description="", plan="enterprise", labels={}, ctx=CTX
    )
    world.store.append(stranger_tenant)
    stranger = replace(world.editor, tenant_id=stranger_tenant.tenant_id)
    theirs = world.pipelines.create(
        stranger,
        PipelineDefinition(
            name="spy",
            steps=(step("e", "Test.emit"),),
            triggers=(world.on_success_of(world.upstream),),
        ),
        CTX,
    ).state.id

    assert world.handle(await world.ran(world.upstream), [theirs]) == []


async def test_the_bookkeeping_beside_a_triggered_run_starts_nothing(world: Triggers) -> None:
    """A trigger on `norn.u*.*` (usage and user events): the usage event appended with the run it
    starts would start the next, and the next, a chain no run's depth counts; the write
    path's bookkeeping and the triggers' own records start no run."""
    looping = world.downstream(world.on_success_of(world.upstream), EventTrigger("norn.u*.*"))
    [firing] = world.handle(await world.ran(world.upstream), [looping])
    assert firing.run_id is not None
    [(ids, names)] = [(ids, names) for ids, names in world.appends if UUID(firing.run_id) in ids]
    assert "UsageShardTaken" in names
    beside = [world.last_event(i) for i in ids if i != UUID(firing.run_id)]
    assert {e.type.split(".")[1] for e in beside} >= {"usage", "trigger"}

    assert [world.handle(event, [looping]) for event in beside] == [[]] * len(beside)


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        (EventTrigger("run.succeeded"), "triggers[0].on"),
        (EventTrigger("norn.trigger.*"), "triggers[0].on"),
        (EventTrigger("norn.usage.*"), "triggers[0].on"),
        (EventTrigger("norn.usage.shard_taken.v1"), "triggers[0].on"),
        (EventTrigger("norn.name_claim.*"), "triggers[0].on"),
        (EventTrigger("norn.pipeline_deployments.*"), "triggers[0].on"),
        (EventTrigger("norn.run.succeeded", {"Bad Key": "x"}), "triggers[0].where.Bad Key"),
    ],
)
def test_a_trigger_that_cannot_work_is_refused_with_its_field(
    world: Triggers, trigger: EventTrigger, field: str
) -> None:
    with pytest.raises(InvalidDefinition) as refused:
        world.downstream(trigger)
    assert field in {e.field for e in refused.value.errors}


async def test_an_event_older_than_the_trigger_does_not_fire_it(world: Triggers) -> None:
    """A trigger reacts to what happens after the revision that declares it, not to a
    history the trigger role reads late."""
    earlier = await world.ran(world.upstream)
    downstream = world.downstream(world.on_success_of(world.upstream))

    assert world.handle(earlier, [downstream]) == []
    assert len(world.handle(await world.ran(world.upstream), [downstream])) == 1


async def test_a_later_edit_that_keeps_the_triggers_does_not_move_their_start(
    world: Triggers,
) -> None:
    """From the revision that declares a trigger: an event after it, read late by the
    trigger role, still fires after an edit of something else (the description); after
    a revision that changes the triggers, only what follows it does."""
    trigger = world.on_success_of(world.upstream)
    downstream = world.downstream(trigger)
    between = await world.ran(world.upstream)

    def revise(description: str, *triggers: EventTrigger) -> None:
        world.pipelines.revise(
            world.editor,
            downstream,
            PipelineDefinition(
                name="downstream",
                description=description,
                steps=(step("e", "Test.emit"),),
                triggers=triggers,
            ),
            CTX,
        )

    revise("described", trigger)
    assert len(world.handle(between, [downstream])) == 1

    before_change = await world.ran(world.upstream)
    revise("described", trigger, EventTrigger("norn.run.failed"))
    assert world.handle(before_change, [downstream]) == []


async def test_a_deployments_trigger_runs_its_active_release_with_its_variables(
    world: Triggers,
) -> None:
    on_upstream = world.on_success_of(world.upstream, day="today")
    deployment = world.create("staging", variables={"region": "eu", "day": "-"})
    world.deployments.set_triggers(world.editor, deployment.id, (on_upstream,), CTX)
    world.revise(step("e", "Test.emit"), step("f", "Test.emit", "e"))  # revision 2: not released
    succeeded = await world.ran(world.upstream)

    [firing] = world.handle(succeeded, [], deployments=[deployment.id])

    run = world.run(triggered_run_id(str(deployment.id), succeeded.id))
    assert firing.run_id == str(run.id) and run.revision == 1
    assert run.params == {"region": "eu", "day": "today"}
    trigger = run.trigger
    assert (trigger.kind, trigger.deployment_id, trigger.environment, trigger.release) == (
        "event",
        str(deployment.id),
        "staging",
        1,
    )
    [recorded] = world.store.stream(firing_id(str(deployment.id), succeeded.id))
    assert isinstance(recorded, TriggerFired) and recorded.deployment_id == str(deployment.id)
    assert world.handle(succeeded, [], deployments=[deployment.id]) == []


async def test_a_deployments_triggers_hold_from_when_they_are_set_until_it_retires(
    world: Triggers,
) -> None:
    deployment = world.create("staging")
    before = await world.ran(world.upstream)
    changed = world.deployments.set_triggers(
        world.editor, deployment.id, (world.on_success_of(world.upstream),), CTX
    )
    again = world.deployments.set_triggers(
        world.editor, deployment.id, (world.on_success_of(world.upstream),), CTX
    )
    assert changed.position is not None and again.position is None  # the same: no event

    assert world.handle(before, [], deployments=[deployment.id]) == []
    world.deployments.retire(world.editor, deployment.id, CTX)
    assert world.handle(await world.ran(world.upstream), [], deployments=[deployment.id]) == []
    with pytest.raises(InvalidDefinition):
        world.create("production", triggers=(EventTrigger("nope"),))
