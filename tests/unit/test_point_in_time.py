"""Point-in-time reads (application/point_in_time.py) on an in-memory store: a pipeline
as it was at a position and at a time, before it existed, after its delete, and for a
principal of another tenant."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from application.errors import NotFound
from application.point_in_time import PointInTime
from application.principal import Principal
from tests.unit.test_pipeline_service import CTX, World, definition


def positions(world: World) -> list[int]:
    notifications = world.store.recorder.select_notifications(start=None, limit=10_000)  # type: ignore[attr-defined]
    return [n.id for n in notifications]


def test_as_of_a_position_shows_the_definition_then() -> None:
    world = World()
    created = world.service.create(world.editor, definition("first"), CTX)
    pipeline_id = created.state.id
    revised = world.service.revise(world.editor, pipeline_id, definition("second"), CTX)
    past = PointInTime(world.store)

    then = past.pipeline(world.editor, pipeline_id, created.position or 0)
    now = past.pipeline(world.editor, pipeline_id, revised.position or 0)

    assert (then.state.definition.name, then.version, then.state.revision) == ("first", 1, 1)
    assert (now.state.definition.name, now.version, now.state.revision) == ("second", 2, 2)
    assert then.created_by == CTX.actor
    # Past the last event: as it is now.
    assert past.pipeline(world.editor, pipeline_id, 10**9).version == 2


def test_as_of_a_time_takes_the_last_event_at_or_before_it() -> None:
    world = World()
    created = world.service.create(world.editor, definition("first"), CTX)
    pipeline_id = created.state.id
    world.service.revise(world.editor, pipeline_id, definition("second"), CTX)
    events = world.store.stream(pipeline_id)
    past = PointInTime(world.store)

    assert past.pipeline(world.editor, pipeline_id, events[0].timestamp).version == 1
    assert past.pipeline(world.editor, pipeline_id, events[1].timestamp).version == 2
    with pytest.raises(NotFound):
        past.pipeline(world.editor, pipeline_id, events[0].timestamp - timedelta(microseconds=1))


def test_before_creation_after_a_delete_or_in_another_tenant_it_is_not_found() -> None:
    world = World()
    before = max(positions(world))
    created = world.service.create(world.editor, definition("doomed"), CTX)
    pipeline_id = created.state.id
    deleted = world.service.delete(world.editor, pipeline_id, CTX)
    past = PointInTime(world.store)
    stranger = Principal("u2", "eve", str(uuid4()), frozenset({"admin"}), tenant_status="active")

    assert past.pipeline(world.editor, pipeline_id, created.position or 0).version == 1
    for principal, as_of in (
        (world.editor, before),
        (world.editor, 0),
        (world.editor, deleted.position or 0),
        (stranger, created.position or 0),
    ):
        with pytest.raises(NotFound):
            past.pipeline(principal, pipeline_id, as_of)
    with pytest.raises(NotFound):  # an id of another kind
        past.job(world.editor, pipeline_id, created.position or 0)
