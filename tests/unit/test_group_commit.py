"""Group commit of one tenant's creates (application/group_commit.py), through the pipeline
service on the in-memory store: commands decided while an append runs are stored together
in the next one, in order; a failed append fails only what it must, and no usage version
is ever stored after a hole."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from application import group_commit
from domain.errors import NameTaken
from domain.usage import UsageShard
from tests.unit.test_pipeline_service import CTX, World, definition

DEADLINE = 10.0


class GatedInserts:
    """The store's recorder, with its first insert held until `release` (so that the
    commands started meanwhile hand their events over and queue) and every insert counted."""

    def __init__(self, world: World) -> None:
        self.recorder: Any = world.store.recorder
        self._insert = self.recorder.insert_events
        self.entered = threading.Event()
        self._open = threading.Event()
        self.calls: list[int] = []
        self._lock = threading.Lock()
        self.recorder.insert_events = self.insert_events

    def insert_events(self, stored_events: Any, **kwargs: Any) -> Any:
        with self._lock:
            first = not self.calls
            self.calls.append(len(stored_events))
        if first:
            self.entered.set()
            assert self._open.wait(DEADLINE)
        return self._insert(stored_events, **kwargs)

    def release(self) -> None:
        self._open.set()


def queue_of(world: World) -> group_commit.CommitQueue:
    return world.service.ledger._key_of(pipelines_usage(world)).queue


def pipelines_usage(world: World) -> Any:
    """The shard of the tenant's pipelines usage that the service takes from."""
    return world.service.ledger.key(world.tenant_id, "max_pipelines")


def waiting(world: World) -> int:
    return len(queue_of(world)._waiting)


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def assert_usage_whole(world: World) -> None:
    """The usage's stored versions run 1, 2, 3, … with no hole, and replayed from the
    store it counts exactly the pipelines that exist."""
    versions = [
        n.originator_version
        for n in world.store.recorder.select_notifications(start=None, limit=100_000)  # type: ignore[attr-defined]
        if n.originator_id == pipelines_usage(world)
    ]
    assert versions == list(range(1, len(versions) + 1))
    assert isinstance(world.store.repository.get(pipelines_usage(world)), UsageShard)
    used = world.service.ledger.used(world.tenant_id, "max_pipelines")
    assert used == world.stored().count("PipelineCreated")


def run_all(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=t) for t in targets]
    for thread in threads:
        thread.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive()


@pytest.fixture
def world() -> Iterator[World]:
    world = World(max_pipelines=1000)
    world.service.create(world.editor, definition("warm"), CTX)  # usage counted and kept
    yield world


def test_creates_decided_while_an_append_runs_are_stored_together_in_the_next(
    world: World,
) -> None:
    gate = GatedInserts(world)
    outcomes: list[str] = []
    positions: dict[str, int | None] = {}

    def create(name: str) -> Callable[[], None]:
        def run() -> None:
            positions[name] = world.service.create(world.editor, definition(name), CTX).position
            outcomes.append(name)

        return run

    first = run_all([create("first")])
    assert gate.entered.wait(DEADLINE)
    rest = run_all([create(f"p{i}") for i in range(8)])
    until(lambda: waiting(world) == 8)  # all decided and handed over, none stored
    gate.release()
    join(first + rest)

    assert sorted(outcomes) == sorted(["first", *(f"p{i}" for i in range(8))])
    assert gate.calls == [3, 8 * 3]  # the leader alone, then the eight in one append
    # Each answers the position of its append, whole: where all it wrote is readable.
    last = len(world.stored())
    assert {positions[f"p{i}"] for i in range(8)} == {last}
    assert positions["first"] == last - 8 * 3
    assert world.service.ledger.used(world.tenant_id, "max_pipelines") == 10
    assert_usage_whole(world)


@pytest.mark.parametrize("guilty_leads", [True, False], ids=["guilty-leads", "guilty-queued"])
def test_a_failed_append_refuses_only_the_guilty_and_stores_the_others(
    world: World, guilty_leads: bool
) -> None:
    """A name already taken fails the append it is in (its claim is assumed new, not
    read): the others of that append, and those decided on the copy that included it,
    are tried again alone and stored; the guilty one learns its name is taken."""
    gate = GatedInserts(world)
    taken: list[str] = []
    created: list[str] = []

    def create(name: str, label: str) -> Callable[[], None]:
        def run() -> None:
            try:
                world.service.create(world.editor, definition(name), CTX)
                created.append(label)
            except NameTaken:
                taken.append(label)

        return run

    leader = create("warm", "guilty") if guilty_leads else create("lead", "lead")
    first = run_all([leader])
    assert gate.entered.wait(DEADLINE)
    queued = [create(f"q{i}", f"q{i}") for i in range(5)]
    if not guilty_leads:
        queued.insert(2, create("warm", "guilty"))
    rest = run_all(queued)
    until(lambda: waiting(world) == len(queued))
    gate.release()
    join(first + rest)

    assert taken == ["guilty"]
    innocents = {f"q{i}" for i in range(5)} | (set() if guilty_leads else {"lead"})
    assert set(created) == innocents
    assert world.service.ledger.used(world.tenant_id, "max_pipelines") == 1 + len(innocents)
    assert_usage_whole(world)


def test_after_a_failed_append_the_usage_is_read_again_not_taken_from_the_failed_copy(
    world: World,
) -> None:
    gate = GatedInserts(world)
    outcome: list[str] = []

    def guilty() -> None:
        with pytest.raises(NameTaken):
            world.service.create(world.editor, definition("warm"), CTX)
        outcome.append("refused")

    threads = run_all([guilty])
    assert gate.entered.wait(DEADLINE)
    gate.release()
    join(threads)
    world.service.create(world.editor, definition("after"), CTX)

    assert outcome == ["refused"]
    assert world.service.ledger.used(world.tenant_id, "max_pipelines") == 2
    assert_usage_whole(world)


@pytest.mark.parametrize("saved", ["u2", "u1"], ids=["inner-usage", "outer-usage-only"])
def test_a_command_holding_two_usages_appends_alone_after_those_decided_before_it(
    saved: str,
) -> None:
    """Nested turns (a deployment holding its own usage and the day's runs) append alone,
    once the batches decided before them on either usage are stored, whichever of the
    two usages the append carries."""
    queue = group_commit.CommitQueue()
    order: list[str] = []

    class Store:
        def collected(self, *aggregates: Any) -> Any:
            return type("P", (), {"events": []})()

        def record(self, *aggregates: Any) -> int | None:
            order.append("alone")
            return 2

        def record_together(self, batches: Any) -> int | None:
            time.sleep(0.05)
            order.append(f"together:{len(batches)}")
            return 1

    store = Store()
    handed = threading.Event()
    grouped = threading.Thread(target=lambda: queue.commit(store, store.collected(), 0, handed.set))
    grouped.start()
    assert handed.wait(DEADLINE)
    outer = group_commit.Turn("u1", queue, 0, lambda: None, alone=False)
    inner = group_commit.Turn("u2", group_commit.CommitQueue(), 0, lambda: None, alone=False)
    token = group_commit.enter(outer)
    token_inner = group_commit.enter(inner)
    try:
        assert inner.append(store, [type("A", (), {"id": saved})()]) == 2
    finally:
        group_commit.leave(token_inner)
        group_commit.leave(token)
    grouped.join(DEADLINE)

    assert outer.alone and inner.alone
    assert order == ["together:1", "alone"]
