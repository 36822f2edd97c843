"""The relay against real PostgreSQL and JetStream: order, resume, dedup, NATS outages,
the leader lock, and wake-ups by appends in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from nats.js.api import RawStreamMsg, StreamConfig
from nats.js.errors import NotFoundError

from application.event_store import NornEventStore
from domain.events import CommandContext
from domain.name_claim import NameClaim
from domain.pipeline import Pipeline, PipelineDefinition, StepSpec
from domain.run import Run, Trigger
from infrastructure import append_pokes, envelope
from infrastructure import relay as relay_module
from infrastructure.append_pokes import AppendPokes, poke_subject
from infrastructure.embedded import EmbeddedNats, free_port
from infrastructure.nats import (
    DUPLICATE_WINDOW_SECONDS,
    FOLLOWING_HEADER,
    POSITION_HEADER,
    events_subjects,
)
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.relay import Relay
from infrastructure.work_queue import WorkItem, work_stream, work_subject

CTX = CommandContext("user:u1", "corr-1")
STEP = StepSpec("read", "Input.file", {"path": "in.jsonl"})
WAIT = 10.0  # bound of every wait for something asynchronous


def new_pipeline(steps: tuple[StepSpec, ...] = (STEP,)) -> tuple[Pipeline, NameClaim]:
    """A pipeline of tenant t1 and its name claim."""
    definition = PipelineDefinition(name=f"p-{uuid.uuid4().hex[:8]}", steps=steps)
    pipeline = Pipeline.create(
        pipeline_id=uuid.uuid4(),
        tenant_id="t1",
        definition=definition,
        check_plugin=PluginCatalog().check_step,
        ctx=CTX,
    )
    claim = NameClaim.claim_new(
        tenant_id="t1",
        scope="pipeline:t1",
        name=definition.name,
        holder_id=str(pipeline.id),
        ctx=CTX,
    )
    return pipeline, claim


def create_pipelines(store: NornEventStore, count: int) -> None:
    """Append `count` pipelines: two events each (the pipeline and its name claim)."""
    for _ in range(count):
        store.append(*new_pipeline())


def queue_run(store: NornEventStore) -> Run:
    """Append a queued run of a one-step pipeline."""
    definition = PipelineDefinition(
        name="p", steps=(StepSpec("read", "Input.file", {"path": "in.jsonl"}),)
    )
    run = Run.queue(
        run_id=uuid.uuid4(),
        tenant_id="t1",
        pipeline_id=str(uuid.uuid4()),
        pipeline_name="p",
        revision=1,
        definition=definition,
        params={},
        trigger=Trigger("user", "u1"),
        ctx=CTX,
    )
    store.append(run)
    return run


async def append(store: NornEventStore, count: int) -> None:
    await asyncio.to_thread(create_pipelines, store, count)


def stored(database_url: str) -> list[tuple[int, uuid.UUID, int]]:
    """(position, originator id, version) of every stored event, in order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version "
            "FROM norn_events ORDER BY notification_id"
        ).fetchall()
    return [(int(r[0]), r[1], int(r[2])) for r in rows]


async def stream_messages(js: Any, stream: str) -> list[RawStreamMsg]:
    """Every message the stream holds, in stream order."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    if info.state.messages == 0:
        # A stream created a moment ago reports first_seq 0, which get_msg refuses (400).
        return []
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(NotFoundError):  # a deleted sequence
            messages.append(await js.get_msg(stream, seq=seq))
    assert len(messages) == info.state.messages
    return messages


def positions(messages: list[RawStreamMsg]) -> list[int]:
    return [int((m.headers or {})[POSITION_HEADER]) for m in messages]


async def wait_until(check: Callable[[], bool], within: float = WAIT) -> None:
    """Bounded wait for state another task changes."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s")
        await asyncio.sleep(0.05)


def relay_for(database_url: str, nats_url: str, names: Any, **options: Any) -> Relay:
    return Relay(
        database_url=database_url,
        nats_url=nats_url,
        stream=names.stream,
        subject_prefix=names.prefix,
        **options,
    )


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)  # run() returns (and raises nothing) on stop


async def publish_all(relay: Relay, expected: int) -> int:
    """Passes of the relay until it has published `expected` events (or a while has
    passed): a just-committed event is published once every transaction that could
    precede it has ended, and other databases on a shared server run transactions too
    (docs/architecture.md §4)."""
    published = 0
    deadline = time.monotonic() + WAIT
    while published < expected and time.monotonic() < deadline:
        published += await relay.publish_pending()
        if published < expected:
            await asyncio.sleep(0.02)
    return published


async def published_by_a_relay(
    database_url: str, nats_url: str, names: Any, store: NornEventStore, pipelines: int
) -> None:
    """`pipelines` pipelines appended and published by a relay, closed since."""
    await append(store, pipelines)
    relay = relay_for(database_url, nats_url, names)
    try:
        assert await publish_all(relay, 2 * pipelines) == 2 * pipelines
    finally:
        await relay.close()


async def assert_exactly_once(js: Any, stream: str, database_url: str) -> None:
    """The stream holds every stored event once, in position order."""
    events = stored(database_url)
    messages = await stream_messages(js, stream)
    assert positions(messages) == [p for p, _, _ in events]
    ids = [(m.headers or {})["Nats-Msg-Id"] for m in messages]
    assert ids == [envelope.event_id(o, v) for _, o, v in events]


async def test_publishes_every_event_in_order_as_cloudevents(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    await append(event_store, 3)
    relay = relay_for(database_url, nats_url, nats_names)
    try:
        assert await publish_all(relay, 6) == 6
        assert await relay.publish_pending() == 0  # nothing left, nothing published twice
    finally:
        await relay.close()

    events = stored(database_url)
    assert relay.published_position == events[-1][0]
    messages = await stream_messages(js, nats_names.stream)
    assert len(messages) == len(events) == 6
    for message, (position, originator_id, version) in zip(messages, events, strict=True):
        headers = message.headers or {}
        event = envelope.decode(message.data or b"")
        assert headers[POSITION_HEADER] == str(position)
        assert headers["Nats-Msg-Id"] == envelope.event_id(originator_id, version) == event.id
        assert event.specversion == "1.0"
        assert (event.position, event.version, event.subject) == (
            position,
            version,
            str(originator_id),
        )
        assert event.tenant == "t1"
        assert event.actor == "user:u1"
        assert event.correlationid == "corr-1"
        _, aggregate, name, _ = event.type.split(".")
        assert message.subject == f"{nats_names.prefix}.events.t1.{aggregate}.{name}"
    types = {envelope.decode(m.data or b"").type for m in messages}
    assert types == {"norn.pipeline.created.v1", "norn.name_claim.taken.v1"}
    # Each window counts down to its last message (projections/consumer.py waits for the
    # rest of a window whose first messages came).
    following = [int((m.headers or {}).get(FOLLOWING_HEADER, 0)) for m in messages]
    assert following[-1] == 0
    assert max(following) >= 1  # a create's two events are read, and sent, together
    for this, after in itertools.pairwise(following):
        assert this in (0, after + 1)


async def test_a_new_relay_resumes_without_gap_or_duplicate(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    await append(event_store, 3)
    first = relay_for(database_url, nats_url, nats_names)
    async with running(first):
        await wait_until(lambda: first.published_position == 6)

    # Crash: a relay killed mid-pass, its session (and leader lock) gone with it, while
    # more events are appended.
    await append(event_store, 6)
    crashed = relay_for(database_url, nats_url, nats_names, batch_size=2)
    passing = asyncio.create_task(crashed.publish_pending())
    await wait_until(lambda: crashed.published_position > 6 or passing.done())
    passing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await passing
    await append(event_store, 2)
    terminate_lock_holders(database_url)

    resumed = relay_for(database_url, nats_url, nats_names, batch_size=3)
    try:
        total = stored(database_url)[-1][0]
        async with running(resumed):
            await wait_until(lambda: resumed.published_position == total)
        await assert_exactly_once(js, nats_names.stream, database_url)
        assert len(stored(database_url)) == 22
    finally:
        await crashed.close()


async def test_republished_events_are_dropped_by_the_duplicate_window(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    await published_by_a_relay(database_url, nats_url, nats_names, event_store, 2)
    messages = await stream_messages(js, nats_names.stream)

    # Anyone re-publishing the same event ids: acked as duplicates, not stored.
    for message in messages:
        headers = message.headers or {}
        ack = await js.publish(
            message.subject,
            message.data,
            headers={k: headers[k] for k in ("Nats-Msg-Id", POSITION_HEADER)},
        )
        assert ack.duplicate
    assert len(await stream_messages(js, nats_names.stream)) == 4

    # A relay that resumes from a stale point (the last message deleted) re-publishes
    # position 4; JetStream drops it, and the relay carries on after it.
    await js.delete_msg(nats_names.stream, messages[-1].seq)
    again = relay_for(database_url, nats_url, nats_names)
    try:
        assert await publish_all(again, 1) == 1
        assert again.published_position == 4
        assert positions(await stream_messages(js, nats_names.stream)) == [1, 2, 3]
        await append(event_store, 1)
        assert await publish_all(again, 2) == 2
        assert positions(await stream_messages(js, nats_names.stream)) == [1, 2, 3, 5, 6]
    finally:
        await again.close()


async def test_a_window_that_begins_with_duplicates_goes_again_one_ack_at_a_time(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    # A window's events go without acks but the last (its ack answers for them all). When
    # the window begins with events the stream already holds, that ack is no answer: the
    # window goes again one ack at a time, and the relay carries on exactly once.
    await published_by_a_relay(database_url, nats_url, nats_names, event_store, 2)
    for message in (await stream_messages(js, nats_names.stream))[2:]:
        await js.delete_msg(nats_names.stream, message.seq)
    await append(event_store, 1)

    again = relay_for(database_url, nats_url, nats_names)
    async with running(again):
        # Resuming after position 2, it re-publishes 3 and 4 (dropped as duplicates) in
        # the window of 5 and 6.
        await wait_until(lambda: again.published_position == 6, within=3 * WAIT)
    assert positions(await stream_messages(js, nats_names.stream)) == [1, 2, 5, 6]


async def test_nats_unavailable_delays_but_never_stops_publishing(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    unreachable = f"nats://127.0.0.1:{free_port()}"
    relay = relay_for(database_url, unreachable, nats_names)
    async with running(relay) as task:
        await append(event_store, 2)  # the store keeps taking commands
        await asyncio.sleep(1.5)
        assert not task.done()
    assert relay.published_position == 0
    assert len(stored(database_url)) == 4

    catching_up = relay_for(database_url, nats_url, nats_names)
    try:
        assert await publish_all(catching_up, 4) == 4
    finally:
        await catching_up.close()
    await assert_exactly_once(js, nats_names.stream, database_url)


async def test_the_same_relay_catches_up_when_nats_returns(
    database_url: str, nats_names: Any, event_store: NornEventStore, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path, port=free_port())
    url = f"nats://127.0.0.1:{server.port}"
    relay = relay_for(database_url, url, nats_names)
    try:
        async with running(relay):
            await append(event_store, 2)  # NATS not started yet
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.start)
            await wait_until(lambda: relay.published_position == 4)

            await asyncio.to_thread(server.stop)  # down while running: appends go on
            await append(event_store, 2)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.start)  # same store dir: the stream survives
            await wait_until(lambda: relay.published_position == 8, 20.0)
        nc = await nats.connect(url)
        try:
            await assert_exactly_once(nc.jetstream(), nats_names.stream, database_url)
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_two_relays_publish_each_event_exactly_once(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    await append(event_store, 2)
    a = relay_for(database_url, nats_url, nats_names, batch_size=3)
    b = relay_for(database_url, nats_url, nats_names, batch_size=3)
    async with running(b):
        async with running(a):
            await append(event_store, 5)
            await wait_until(lambda: max(a.published_position, b.published_position) == 14)
            assert [a.is_leader, b.is_leader].count(True) == 1
            await asyncio.sleep(0.5)  # room for a second publisher to show up, if any
            await assert_exactly_once(js, nats_names.stream, database_url)
        # `a` stopped: whichever was standby takes over, and the leader keeps leading.
        await append(event_store, 2)
        await wait_until(lambda: b.published_position == 18)
        assert b.is_leader
    await assert_exactly_once(js, nats_names.stream, database_url)


async def test_appends_in_this_process_wake_the_relay_without_polling(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    relay = relay_for(database_url, nats_url, nats_names, poll_interval=30.0)
    event_store.recorder.on_append = relay.wake  # type: ignore[attr-defined]
    async with running(relay):
        await wait_until(lambda: relay.is_leader)
        await asyncio.sleep(1.0)  # the first pass is done and backed off; polls are 30s away
        for expected in (2, 4):
            await append(event_store, 1)
            await wait_until(lambda n=expected: relay.published_position >= n, 5.0)
    assert len(await stream_messages(js, nats_names.stream)) == 4


async def test_with_nothing_waiting_the_relay_reads_once_per_wake_up(
    database_url: str,
    nats_url: str,
    nats_names: Any,
    event_store: NornEventStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a pass that read up to the store's head, the relay neither reads again to
    find nothing nor looks again within milliseconds: it waits for the next wake-up (or
    its poll). It used to make about 14 reads a one-step run of three appends. (Reads
    before the publication may be several: another database's transaction on the same
    server can hold the horizon a moment.)"""
    reads: list[float] = []
    read = relay_module.read_with_head

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(time.monotonic())
        return await read(*args, **kwargs)

    monkeypatch.setattr(relay_module, "read_with_head", counted)
    relay = relay_for(database_url, nats_url, nats_names, poll_interval=30.0)
    event_store.recorder.on_append = relay.wake  # type: ignore[attr-defined]
    async with running(relay):
        await wait_until(lambda: relay.is_leader)
        await asyncio.sleep(0.5)
        for _ in range(3):
            await append(event_store, 1)
            top = stored(database_url)[-1][0]
            await wait_until(lambda top=top: relay.published_position >= top)
            published = len(reads)
            await asyncio.sleep(0.5)
            # Before, it read again at once to find nothing, then 1, 3, 7, ... 511 ms on.
            assert len(reads) == published


async def test_appends_of_other_processes_are_found_by_the_poll(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    """No NOTIFY (it would serialise commits): another process's append, which wakes
    nothing here, is published within the poll interval."""
    relay = relay_for(database_url, nats_url, nats_names, poll_interval=0.05)
    async with running(relay):
        await wait_until(lambda: relay.is_leader)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await append(event_store, 1)
        await wait_until(lambda: relay.published_position > 0, 5.0)
        assert time.monotonic() - started < 1.0


async def test_appends_of_other_processes_poke_the_relay_over_nats(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    """An append in a process that does not lead the relay pokes it over NATS
    (infrastructure/append_pokes.py): it is published at once, not at the next poll."""
    relay = relay_for(database_url, nats_url, nats_names, poll_interval=30.0)
    pokes = AppendPokes(nats_url, nats_names.prefix)
    event_store.recorder.on_append = pokes.poke  # type: ignore[attr-defined]
    stop = asyncio.Event()
    poking = asyncio.create_task(pokes.run(stop))
    try:
        async with running(relay):
            await wait_until(lambda: relay.is_leader and pokes.connected)
            # Settled: with nothing waiting it sleeps its poll interval, 30 s here.
            await asyncio.sleep(0.3)
            await append(event_store, 1)
            await wait_until(lambda: relay.published_position > 0, 1.0)
    finally:
        stop.set()
        await poking
    assert pokes.sent >= 1


@contextlib.asynccontextmanager
async def poking(
    nats_url: str, names: Any
) -> AsyncIterator[tuple[AppendPokes, list[tuple[float, bytes]]]]:
    """Running pokes, connected, and the pokes received: (time.monotonic(), data)."""
    received: list[tuple[float, bytes]] = []
    nc = await nats.connect(nats_url)

    async def got(msg: Any) -> None:
        received.append((time.monotonic(), msg.data))

    await nc.subscribe(poke_subject(names.prefix), cb=got)
    pokes = AppendPokes(nats_url, names.prefix)
    stop = asyncio.Event()
    running_pokes = asyncio.create_task(pokes.run(stop))
    try:
        await wait_until(lambda: pokes.connected)
        yield pokes, received
    finally:
        stop.set()
        await running_pokes
        await nc.close()


async def test_pokes_are_coalesced(nats_url: str, nats_names: Any) -> None:
    """Appends from many threads while a poke waits to be sent send that one poke."""
    async with poking(nats_url, nats_names) as (pokes, received):

        def many() -> None:
            for _ in range(200):
                pokes.poke()

        threads = [threading.Thread(target=many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()  # blocking the loop on purpose: nothing is sent meanwhile
        await wait_until(lambda: pokes.sent == 1)
        pokes.poke()  # one after the first was sent is sent too
        await wait_until(lambda: pokes.sent == 2)
        await wait_until(lambda: len(received) == 2)
        await asyncio.sleep(0.2)
        assert [data for _, data in received] == [b"", b""]  # a poke carries nothing


async def test_a_poke_waits_for_the_gap_after_the_last_and_takes_the_appends_meanwhile(
    nats_url: str, nats_names: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(append_pokes, "POKE_GAP", 0.3)
    async with poking(nats_url, nats_names) as (pokes, received):
        pokes.poke()  # after a quiet spell: at once
        await wait_until(lambda: pokes.sent == 1)
        for _ in range(5):  # within the gap: one poke, when the gap has passed
            pokes.poke()
            await asyncio.sleep(0.01)
        await wait_until(lambda: len(received) == 2)
        await asyncio.sleep(0.4)
        assert pokes.sent == 2 and len(received) == 2
        assert received[1][0] - received[0][0] > 0.2


async def test_a_long_transaction_that_is_not_an_append_holds_the_relay_only_briefly(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore
) -> None:
    """A transaction that took its id before the appends (a slow read-model batch, work
    of another database on the same server) keeps their events below the plain horizon;
    the relay looks past it once it has been held up a moment."""
    relay = relay_for(database_url, nats_url, nats_names)
    with psycopg.connect(database_url) as other:
        other.execute("CREATE TEMP TABLE scratch (x int)")
        other.execute("INSERT INTO scratch VALUES (1)")  # holds a transaction id
        async with running(relay):
            await wait_until(lambda: relay.is_leader)
            await append(event_store, 2)
            await wait_until(lambda: relay.published_position == 4, 5.0)
        other.rollback()


async def test_a_running_append_holds_the_relay_until_it_ends(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore
) -> None:
    """An append that has taken its position and not committed must not be passed, even
    with the precise horizon: a later append's event waits for it."""
    relay = relay_for(database_url, nats_url, nats_names)
    with psycopg.connect(database_url) as slow:
        slow.execute(
            "SELECT norn_events_append(ARRAY[(%s, 1, 'x', %s)]::stored_event_uuid[])",
            (uuid.uuid4(), b"{}"),
        )
        async with running(relay):
            await wait_until(lambda: relay.is_leader)
            await append(event_store, 1)  # positions 2 and 3
            await asyncio.sleep(0.5)  # well past HELD_UP: the precise horizon is in use
            assert relay.published_position == 0
            slow.rollback()
            await wait_until(lambda: relay.published_position == 3, 5.0)


def terminate_lock_holders(database_url: str) -> None:
    """What a crashed process leaves behind: its sessions end, and their locks with them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            # Only this test's database: other tests and benchmarks share the server.
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )


async def test_a_queued_run_gets_its_work_item_with_its_event(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    await append(event_store, 1)
    run = await asyncio.to_thread(queue_run, event_store)
    await append(event_store, 1)
    relay = relay_for(database_url, nats_url, nats_names)
    async with running(relay):
        await wait_until(lambda: relay.published_position == 5)
    items = await stream_messages(js, work_stream(nats_names.stream))
    assert len(items) == 1  # none for the other events
    assert items[0].subject == work_subject(nats_names.prefix, "t1", str(run.id))
    assert (items[0].headers or {})["Nats-Msg-Id"] == f"run:{run.id}:1"
    item = msgspec.json.decode(items[0].data or b"", type=WorkItem)
    assert item == WorkItem(run_id=str(run.id), tenant_id="t1")
    await assert_exactly_once(js, nats_names.stream, database_url)


async def test_a_work_item_the_work_stream_did_not_take_is_published_before_going_on(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    relay = relay_for(database_url, nats_url, nats_names)
    async with running(relay):
        await append(event_store, 1)
        await wait_until(lambda: relay.published_position == 2)
        # The work stream goes away under the relay: the run's event is stored, its item
        # refused; the relay reconnects (creating the stream again) and publishes the
        # item before anything else.
        await js.delete_stream(work_stream(nats_names.stream))
        run = await asyncio.to_thread(queue_run, event_store)
        await append(event_store, 1)

        async def item_published() -> bool:
            with contextlib.suppress(NotFoundError):
                items = await stream_messages(js, work_stream(nats_names.stream))
                return len(items) == 1 and relay.published_position == 5
            return False

        deadline = time.monotonic() + 3 * WAIT
        while not await item_published():
            assert time.monotonic() < deadline, "the owed work item was never published"
            await asyncio.sleep(0.1)
    items = await stream_messages(js, work_stream(nats_names.stream))
    assert (items[0].headers or {})["Nats-Msg-Id"] == f"run:{run.id}:1"
    await assert_exactly_once(js, nats_names.stream, database_url)


def create_big_pipeline(store: NornEventStore, kilobytes: int) -> None:
    """A pipeline whose event is over `kilobytes` KB (and its name claim)."""
    steps = tuple(StepSpec(f"s{n}", "Input.file", {"path": "x" * 1024}) for n in range(kilobytes))
    store.append(*new_pipeline(steps))


async def test_the_item_of_a_run_in_a_window_refused_partway_is_owed(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, js: Any
) -> None:
    # A stream that refuses messages over 16 KB. A window whose run event is stored but
    # whose next event is refused is not known stored; the run's item, refused too (its
    # stream is gone), must still be owed: the relay resumes after the run's event.
    await js.add_stream(
        StreamConfig(
            name=nats_names.stream,
            subjects=[events_subjects(nats_names.prefix)],
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_msg_size=16_384,
        )
    )
    relay = relay_for(database_url, nats_url, nats_names)
    async with running(relay):
        await append(event_store, 1)
        await wait_until(lambda: relay.published_position == 2)
        await js.delete_stream(work_stream(nats_names.stream))

        def run_then_big() -> Run:
            run = queue_run(event_store)
            create_big_pipeline(event_store, 20)
            return run

        run = await asyncio.to_thread(run_then_big)

        async def item_published() -> bool:
            with contextlib.suppress(NotFoundError):
                return len(await stream_messages(js, work_stream(nats_names.stream))) == 1
            return False

        deadline = time.monotonic() + 3 * WAIT
        while not await item_published():
            assert time.monotonic() < deadline, "the run's work item was never published"
            await asyncio.sleep(0.1)
        # Stalled on the event it cannot publish. On nats-server >= 2.12 the item goes out
        # as the window fails; the relay learns position 3 from the stream only after its
        # retry's pause.
        await wait_until(lambda: relay.published_position == 3)
        await asyncio.sleep(0.3)
        assert relay.published_position == 3
    items = await stream_messages(js, work_stream(nats_names.stream))
    assert (items[0].headers or {})["Nats-Msg-Id"] == f"run:{run.id}:1"


async def test_a_wake_up_arriving_with_the_stop_does_not_keep_the_relay_running(
    database_url: str, nats_url: str, nats_names: Any
) -> None:
    """Stopping cancels the relay's loop; a wake-up (an append) landing in the same
    moment must not swallow that cancel. asyncio.wait_for on Python 3.11 did: the loop
    went on and stopping waited out its whole bound (3 s), now and then."""
    for _ in range(10):
        relay = relay_for(database_url, nats_url, nats_names)
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        await wait_until(lambda r=relay: r.is_leader)  # in its loop, waiting to be woken
        relay.wake()
        stop.set()
        # Not wait_for, which would wait on for a task that ignores its cancel.
        stopped, _ = await asyncio.wait([task], timeout=2.0)  # its bound is 3 s
        assert stopped, "the relay outlived its stop"
