"""The read side against real PostgreSQL and NATS JetStream: projection handlers, the
tracking transaction, the runner (NATS, store catch-up, loss detection), rebuild with
swap, read-your-writes waiting, and keyset-paginated queries.

Events are produced by the real application services; the tests publish them to
JetStream themselves (as the relay would), so they do not depend on the relay."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import nats
import psycopg
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from application.event_store import NornEventStore
from application.pipelines import PipelineService
from application.principal import Principal
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.tenant import Tenant
from infrastructure.embedded import EmbeddedNats
from infrastructure.envelope import CloudEvent, encode, subject_for, to_cloud_event
from infrastructure.nats import POSITION_HEADER, ensure_stream, events_subjects
from infrastructure.notification_log import max_position, read_notifications
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.postgres import create_read_pool
from infrastructure.supervision import Backoff
from projections import (
    ALL_PROJECTIONS,
    PipelineQueries,
    PipelinesProjection,
    Projection,
    ProjectionRunner,
    TenantQueries,
    TenantsProjection,
    apply_batch,
    projection_status,
    rebuild,
    wait_for_position,
)
from projections.pagination import encode_cursor
from projections.projection import tracked_position
from projections.usage import ReadModelUsage
from tests.conftest import NatsNames, seed_tenant

# The module, not the function of that name the package exports.
rebuild_module = importlib.import_module("projections.rebuild")

T1 = "00000000-0000-4000-8000-0000000000a1"
T2 = "00000000-0000-4000-8000-0000000000b2"
ALICE = Principal("u1", "alice", T1, frozenset({"editor"}), tenant_status="active")
BOB = Principal("u2", "bob", T2, frozenset({"editor"}), tenant_status="active")
CTX = CommandContext("user:u1", "corr-1")
WAIT = 20.0  # generous bound for convergence; tests never assert on timing


def definition(
    name: str, *, tags: tuple[str, ...] = (), description: str = "", path: str = "in.jsonl"
) -> PipelineDefinition:
    return PipelineDefinition(
        name=name,
        description=description,
        tags=tags,
        steps=(StepSpec("read", "Input.file", {"path": path}),),
    )


@pytest.fixture
def service(event_store: NornEventStore, usage: ReadModelUsage) -> PipelineService:
    seed_tenant(event_store, UUID(T1), "t1")
    seed_tenant(event_store, UUID(T2), "t2")
    return PipelineService(event_store, PluginCatalog(), usage)


@dataclass
class Publisher:
    """Stands in for the relay: publishes the store's new notifications to JetStream
    exactly as the relay does (subject, envelope, dedup and position headers)."""

    js: JetStreamContext
    names: NatsNames
    database_url: str
    position: int = 0
    sequences: dict[str, int] = field(default_factory=dict)  # event id -> stream seq

    async def publish_new(self) -> list[CloudEvent]:
        """Publishes every event committed when called. Like the relay, it reads again
        until the horizon has passed them all: one read can stop short while another
        transaction on the server ends (docs/architecture.md §4)."""
        events: list[CloudEvent] = []
        deadline = time.monotonic() + WAIT
        async with await AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            committed = await max_position(conn)
            while self.position < committed:
                assert time.monotonic() < deadline, f"events up to {committed} never passed"
                # Precise: a runner's own open batch (a test holds one) is not an append.
                notifications = await read_notifications(conn, self.position, 100_000, precise=True)
                for event in map(to_cloud_event, notifications):
                    await self.publish(event)
                    self.position = event.position
                    events.append(event)
        return events

    async def publish(self, event: CloudEvent, msg_id: str | None = None) -> None:
        ack = await self.js.publish(
            subject_for(self.names.prefix, event),
            encode(event),
            headers={"Nats-Msg-Id": msg_id or event.id, POSITION_HEADER: str(event.position)},
        )
        self.sequences[event.id] = ack.seq


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def publisher(nc: Client, nats_names: NatsNames, database_url: str) -> Publisher:
    js = nc.jetstream()
    await ensure_stream(js, nats_names.stream, nats_names.prefix)
    return Publisher(js, nats_names, database_url)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    read_pool = create_read_pool(database_url, max_size=4)
    await read_pool.open()
    yield read_pool
    await read_pool.close()


def make_runner(
    projection: Projection | Sequence[Projection],
    database_url: str,
    nats_url: str,
    names: NatsNames,
    **options: Any,
) -> ProjectionRunner:
    # No store fallback on a quiet NATS unless a test asks for it: the NATS tests must
    # prove that NATS alone fed the read model.
    options.setdefault("relay_stall_after", None)
    # These tests read positions from the tracking row: do not make them wait for a
    # position passed without a commit (test_projection_bookkeeping.py tests that).
    options.setdefault("persist_interval", 0.05)
    return ProjectionRunner(
        projection,
        database_url=database_url,
        nats_url=nats_url,
        stream=names.stream,
        subject_prefix=names.prefix,
        **options,
    )


@contextlib.asynccontextmanager
async def running(runner: ProjectionRunner, *, following: bool = True) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        if following:
            await asyncio.wait_for(runner.following.wait(), WAIT)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


async def head(database_url: str) -> int:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await max_position(conn)


async def position_of(database_url: str, name: str) -> int:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT position FROM projection_tracking WHERE name = %s", (name,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def caught_up(runner: ProjectionRunner, database_url: str) -> None:
    """The runner's catch-up from the store, again until it has read every event
    committed when called (one read can stop short, as in Publisher.publish_new)."""
    committed = await head(database_url)
    deadline = time.monotonic() + WAIT
    await runner.catch_up()
    while await position_of(database_url, runner.projection.name) < committed:
        assert time.monotonic() < deadline, f"{runner.projection.name} never reached {committed}"
        await runner.catch_up()


async def reaches(database_url: str, name: str, position: int) -> None:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await wait_for_position(conn, name, position, WAIT), f"{name} < {position}"


async def rows(database_url: str, table: str = "pipelines") -> list[dict[str, Any]]:
    async with (
        await AsyncConnection.connect(database_url, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(f"SELECT * FROM {table} ORDER BY id")
        return await cur.fetchall()


async def indexes(database_url: str, table: str) -> set[tuple[str, str]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND tablename = %s",
            (table,),
        )
        return {(r[0], r[1]) for r in await cur.fetchall()}


def make_history(service: PipelineService, count: int, prefix: str = "p") -> list[UUID]:
    """count pipelines, every other one revised, every third rolled back, every fifth
    deleted: all four event types, interleaved."""
    ids = []
    for i in range(count):
        pid = service.create(ALICE, definition(f"{prefix}-{i}", tags=("t",)), CTX).state.id
        if i % 2 == 0:
            service.revise(ALICE, pid, definition(f"{prefix}-{i}-r", path="b.jsonl"), CTX)
        if i % 3 == 0:
            service.revise(ALICE, pid, definition(f"{prefix}-{i}", path="c.jsonl"), CTX)
            service.roll_back(ALICE, pid, 1, CTX)
        if i % 5 == 4:
            service.delete(ALICE, pid, CTX)
        ids.append(pid)
    return ids


async def rebuilt_rows(database_url: str, projection: Projection) -> list[dict[str, Any]]:
    """The read model as a from-scratch replay makes it."""
    await rebuild(projection, database_url)
    return await rows(database_url, projection.tables[0])


# 1. handlers, fed through NATS -------------------------------------------------------


async def test_events_through_nats_produce_the_right_rows(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    runner = make_runner(PipelinesProjection(), database_url, nats_url, nats_names)
    async with running(runner):
        kept = service.create(ALICE, definition("etl", tags=("a", "b"), description="d1"), CTX)
        pid = kept.state.id
        editor = CommandContext("user:u9", "corr-2")
        service.revise(ALICE, pid, definition("etl-2", tags=("c",), path="x.jsonl"), editor)
        service.roll_back(ALICE, pid, 1, editor)
        gone = service.create(ALICE, definition("gone"), CTX).state.id
        service.delete(ALICE, gone, CTX)
        clone = service.clone(ALICE, pid, "etl-copy", CTX).state.id
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))

    by_id = {r["id"]: r for r in await rows(database_url)}
    assert set(by_id) == {pid, clone}  # the deleted one has no row
    row = by_id[pid]
    assert row["tenant_id"] == T1
    assert (row["name"], row["description"], row["tags"]) == ("etl", "d1", ["a", "b"])
    assert row["steps"] == [
        {
            "name": "read",
            "plugin": "Input.file",
            "config": {"path": "in.jsonl"},
            "depends_on": [],
            "retries": 0,
            "retry_delay": 1.0,
            "max_delay": 60.0,
            "timeout": None,
            "connection": None,
        }
    ]
    assert (row["revision"], row["version"]) == (3, 3)  # created, revised, rolled back
    assert (row["created_by"], row["updated_by"]) == ("user:u1", "user:u9")
    assert row["updated_at"] > row["created_at"]
    assert row["cloned_from"] is None
    copy = by_id[clone]
    assert copy["name"] == "etl-copy"
    assert copy["cloned_from"] == {"pipeline_id": str(pid), "revision": 3}
    assert (copy["revision"], copy["version"]) == (1, 1)
    # The clone's append was the last one: the clone, then its name claim and usage.
    assert copy["position"] == await head(database_url) - 2


# 2. idempotence ----------------------------------------------------------------------


async def test_redelivery_and_replay_change_nothing(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    make_history(service, 6)
    projection = PipelinesProjection()
    runner = make_runner(projection, database_url, nats_url, nats_names)
    async with running(runner):
        events = await publisher.publish_new()
        top = await head(database_url)
        await reaches(database_url, "pipelines", top)
        before = await rows(database_url)
        tracked_before = await tracking(database_url)

        # Redelivery through NATS: the same events again under new message ids, so the
        # dedup window does not drop them (as after a relay crash beyond the window).
        for event in events:
            await publisher.publish(event, msg_id=str(uuid4()))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            info = await publisher.js.consumer_info(nats_names.stream, runner.durable_name)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the runner did not consume the redelivered messages")
        assert await rows(database_url) == before
        assert await tracking(database_url) == tracked_before

    # The same batch applied again, duplicates within it included, and a full replay.
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await apply_batch(conn, projection, [*events, *events[:3]]) == top
    assert await runner.catch_up() == 0
    assert await rows(database_url) == before
    assert await tracking(database_url) == tracked_before


async def tracking(database_url: str) -> tuple[Any, ...]:
    """The pipelines tracking row: position and when it last moved."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT position, updated_at FROM projection_tracking WHERE name = 'pipelines'"
        )
        row = await cur.fetchone()
        assert row is not None
        return tuple(row)


# 3. killed mid-batch ----------------------------------------------------------------


class PerEventPipelines(PipelinesProjection):
    """The pipelines read model applying a batch event by event through its handlers, as
    the base Projection does, so a test's double can hook `created`: the real one writes
    a stretch of creates in one statement, past that handler."""

    apply_events = Projection.apply_events


class FailingOnce(PerEventPipelines):
    """Raises in the middle of a batch, once: the batch must roll back entirely."""

    def __init__(self, fail_at: int) -> None:
        self.calls = 0
        self.fail_at = fail_at

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        self.calls += 1
        await super().created(cur, event)  # the row is written, then the batch fails
        if self.calls == self.fail_at:
            raise RuntimeError("injected failure in the middle of a batch")


class Slow(PerEventPipelines):
    """Slow handlers, so a cancellation lands inside an open transaction."""

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await super().created(cur, event)
        await asyncio.sleep(0.01)


async def test_a_consumer_acking_each_message_is_made_anew_acking_all(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    """An earlier Norn's consumer acked every message (AckPolicy.EXPLICIT), which
    JetStream cannot change in place: the runner replaces it, and the events published
    before and after it started all reach the read model."""
    projection = PipelinesProjection()
    runner = make_runner(projection, database_url, nats_url, nats_names)
    await publisher.js.add_consumer(
        nats_names.stream,
        ConsumerConfig(
            durable_name=runner.durable_name,
            filter_subject=events_subjects(nats_names.prefix),
            ack_policy=AckPolicy.EXPLICIT,
        ),
    )
    make_history(service, 3)
    await publisher.publish_new()
    async with running(runner):
        make_history(service, 2, prefix="q")
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))
        info = await publisher.js.consumer_info(nats_names.stream, runner.durable_name)
        assert info.config.ack_policy == AckPolicy.ALL
        deadline = time.monotonic() + WAIT
        while info.num_ack_pending or info.num_pending:  # one ack per batch acked it all
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
            info = await publisher.js.consumer_info(nats_names.stream, runner.durable_name)
    assert len(await rows(database_url)) == 5


async def test_handler_failure_mid_batch_converges_to_a_rebuild(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    projection = FailingOnce(fail_at=7)
    runner = make_runner(projection, database_url, nats_url, nats_names, batch_size=8)
    async with running(runner):
        make_history(service, 20)
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))
    assert projection.calls > projection.fail_at  # it failed, then went on
    live = await rows(database_url)
    assert len(live) == 16
    assert live == await rebuilt_rows(database_url, PipelinesProjection())


async def test_a_group_keeps_each_member_through_one_consumer_and_one_failure(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    """The projector's one runner for several read models: one consumer for all (the
    members' own, left by an earlier Norn, are deleted), each member tracked on its own,
    and a member failing mid-batch fails the batch for all; the store catch-up then
    brings each to the head from its own position, nothing applied twice."""
    failing = FailingOnce(fail_at=7)
    members = make_runner(TenantsProjection(), database_url, nats_url, nats_names)
    async with running(members):  # as an earlier Norn ran it: a consumer of its own
        pass
    runner = make_runner(
        [failing, TenantsProjection()],
        database_url,
        nats_url,
        nats_names,
        name="group",
        batch_size=8,
    )
    async with running(runner):
        make_history(service, 20)
        await publisher.publish_new()
        top = await head(database_url)
        await reaches(database_url, "pipelines", top)
        await reaches(database_url, "tenants", top)
        consumers = await publisher.js.consumers_info(nats_names.stream)
    assert [c.name for c in consumers] == [runner.durable_name]
    assert runner.durable_name.endswith("_projection_group")
    assert failing.calls > failing.fail_at  # it failed, then went on
    live = await rows(database_url)
    assert len(live) == 16
    assert live == await rebuilt_rows(database_url, PipelinesProjection())
    assert [r["id"] for r in await rows(database_url, "tenants")] == [UUID(T1), UUID(T2)]


class BrokenUntilHealed(PerEventPipelines):
    """Cannot apply a create until the test heals it (a bug fixed by a restart, a table
    someone locked): the other members of its group must go on meanwhile."""

    def __init__(self) -> None:
        self.healed = False

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        if not self.healed:
            raise RuntimeError("injected: this read model cannot apply a create")
        await super().created(cur, event)


async def test_a_member_that_cannot_apply_holds_back_only_itself(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    broken = BrokenUntilHealed()
    runner = make_runner(
        [broken, TenantsProjection()],
        database_url,
        nats_url,
        nats_names,
        name="group",
        member_retry=Backoff(first=0.05, cap=0.2),
    )
    async with running(runner):
        make_history(service, 10)
        await publisher.publish_new()
        top = await head(database_url)
        await reaches(database_url, "tenants", top)  # the healthy member went on
        assert runner.members.set_aside == ["pipelines"]
        assert await rows(database_url) == []
        broken.healed = True  # its next try from the store succeeds
        await reaches(database_url, "pipelines", top)
        make_history(service, 5, prefix="after")  # and it follows NATS again
        await publisher.publish_new()
        top = await head(database_url)
        await reaches(database_url, "pipelines", top)
        await reaches(database_url, "tenants", top)
        assert runner.members.set_aside == []
    live = await rows(database_url)
    assert len(live) == 8 + 4
    assert live == await rebuilt_rows(database_url, PipelinesProjection())


async def test_runner_cancelled_mid_transaction_converges_to_a_rebuild(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    make_history(service, 40)
    await publisher.publish_new()
    top = await head(database_url)
    runner = make_runner(Slow(), database_url, nats_url, nats_names, batch_size=16)
    task = asyncio.create_task(runner.run(asyncio.Event()))
    for _ in range(int(WAIT / 0.005)):  # until the first batch committed
        if await position_of(database_url, "pipelines") > 0:
            break
        await asyncio.sleep(0.005)
    task.cancel()  # a hard kill: no stop event, whatever transaction is open is abandoned
    with contextlib.suppress(asyncio.CancelledError):
        await task
    killed_at = await position_of(database_url, "pipelines")
    assert 0 < killed_at < top  # really stopped part-way

    async with running(make_runner(PipelinesProjection(), database_url, nats_url, nats_names)):
        make_history(service, 3, prefix="later")
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))
    live = await rows(database_url)
    assert live == await rebuilt_rows(database_url, PipelinesProjection())


# 4. rebuild without downtime --------------------------------------------------------


async def test_rebuild_swaps_tables_while_the_runner_keeps_serving(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
    pool: AsyncConnectionPool,
) -> None:
    index_names = await indexes(database_url, "pipelines")
    runner = make_runner(PipelinesProjection(), database_url, nats_url, nats_names)
    queries = PipelineQueries(pool)
    async with running(runner):
        make_history(service, 25)
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))

        done = asyncio.Event()
        reads = 0
        writes = 0

        async def keep_reading() -> None:
            nonlocal reads
            while not done.is_set():
                items, _ = await queries.list(T1, limit=500)
                assert items  # never an empty or missing table mid-swap
                reads += 1
                await asyncio.sleep(0.005)

        async def keep_writing() -> None:
            nonlocal writes
            while not done.is_set():
                # In a thread, as the API runs commands: a create reads the quota count,
                # which waits for the rebuild's swap, which needs this event loop.
                await asyncio.to_thread(service.create, ALICE, definition(f"during-{writes}"), CTX)
                writes += 1
                await publisher.publish_new()
                await asyncio.sleep(0.01)

        progress: list[tuple[int, int]] = []
        background = [asyncio.create_task(keep_reading()), asyncio.create_task(keep_writing())]
        try:
            rebuilt_at = await rebuild(
                PipelinesProjection(),
                database_url,
                lambda position, top: progress.append((position, top)),
                batch_size=5,
            )
        finally:
            done.set()
            await asyncio.gather(*background)
        assert reads > 0 and writes > 0
        assert progress[-1] == (rebuilt_at, rebuilt_at)
        assert [p for p, _ in progress] == sorted(p for p, _ in progress)

        # The runner continues on the swapped-in tables.
        after = service.create(ALICE, definition("after-rebuild"), CTX).state.id
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))
        assert await queries.get(T1, after) is not None

    assert await indexes(database_url, "pipelines") == index_names
    live = await rows(database_url)
    assert len(live) == 20 + writes + 1
    assert live == await rebuilt_rows(database_url, PipelinesProjection())
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regnamespace('rebuild_pipelines')")
        assert await cur.fetchone() == (None,)


async def test_a_batch_during_the_swaps_final_replay_waits_for_the_swap(
    database_url: str, service: PipelineService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap is one transaction even when its final replay applies something: a live
    runner's batch meanwhile waits for its locks, and is not applied to tables the swap
    then drops (nor is the tracking row set back under it)."""
    make_history(service, 5)
    made_late = False

    def progress(position: int, top: int) -> None:
        nonlocal made_late
        if not made_late and position >= top:  # the main replay is done
            made_late = True
            service.create(ALICE, definition("for-the-swap-to-replay"), CTX)

    outcome: dict[str, object] = {}
    tracked_in_swap = rebuild_module.tracked_position

    async def live_batch_then_tracked(conn: AsyncConnection[Any], name: str) -> int:
        # Inside the swap, right after its replay: another process's batch.
        async with await AsyncConnection.connect(database_url, autocommit=True) as other:
            await other.execute("SET lock_timeout = '300ms'")
            service.create(ALICE, definition("for-the-live-runner"), CTX)
            top = await head(database_url)
            notes = await read_notifications(other, top - 1, 10, precise=True)
            try:
                events = [to_cloud_event(n) for n in notes]
                outcome["batch"] = await apply_batch(other, PipelinesProjection(), events)
            except psycopg.errors.LockNotAvailable:
                outcome["batch"] = "waited"
        return await tracked_in_swap(conn, name)

    monkeypatch.setattr(rebuild_module, "tracked_position", live_batch_then_tracked)
    rebuilt_at = await rebuild(PipelinesProjection(), database_url, progress, batch_size=100)
    assert outcome == {"batch": "waited"}
    names = {row["name"] for row in await rows(database_url)}
    assert "for-the-swap-to-replay" in names and "for-the-live-runner" not in names
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await tracked_position(conn, "pipelines") == rebuilt_at


# 5. catch-up from the store ---------------------------------------------------------


async def test_catches_up_from_the_store_when_the_stream_was_purged(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    make_history(service, 10)
    await publisher.publish_new()
    await publisher.js.purge_stream(nats_names.stream)  # NATS no longer has them
    async with running(make_runner(PipelinesProjection(), database_url, nats_url, nats_names)):
        await reaches(database_url, "pipelines", await head(database_url))
        assert len(await rows(database_url)) == 8
        make_history(service, 2, prefix="new")  # and then it follows NATS
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))
    assert len(await rows(database_url)) == 10


async def test_follows_the_store_when_nats_stays_quiet_while_the_store_moves_on(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    """NATS is up but nothing reaches it (the relay is down): after `relay_stall_after`
    of empty fetches the runner reads the store instead of serving stale reads."""
    runner = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        relay_stall_after=0.3,
        fetch_timeout=0.1,
    )
    async with running(runner):
        make_history(service, 3)  # never published
        await reaches(database_url, "pipelines", await head(database_url))
        assert runner.following.is_set()
    assert len(await rows(database_url)) == 3


async def test_polls_the_store_while_nats_is_unreachable(
    database_url: str, nats_names: NatsNames, service: PipelineService
) -> None:
    runner = make_runner(
        PipelinesProjection(), database_url, "nats://127.0.0.1:9", nats_names, poll_interval=0.1
    )
    async with running(runner, following=False):
        make_history(service, 5)
        await reaches(database_url, "pipelines", await head(database_url))
        assert not runner.following.is_set()
    assert len(await rows(database_url)) == 4


async def ignore_errors(error: Exception) -> None:
    """The test's own client sees the outage too; it is expected."""


async def test_polls_the_store_during_a_nats_outage_then_follows_again(
    database_url: str, nats_names: NatsNames, service: PipelineService, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path)  # our own server, so this test may stop it
    url = server.start()
    client = await nats.connect(
        url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=ignore_errors
    )
    try:
        js = client.jetstream()
        await ensure_stream(js, nats_names.stream, nats_names.prefix)
        publisher = Publisher(js, nats_names, database_url)
        runner = make_runner(
            PipelinesProjection(), database_url, url, nats_names, poll_interval=0.1
        )
        async with running(runner):
            make_history(service, 2)
            await publisher.publish_new()
            await reaches(database_url, "pipelines", await head(database_url))

            server.stop()
            make_history(service, 2, prefix="outage")  # in the store only
            await reaches(database_url, "pipelines", await head(database_url))
            assert not runner.following.is_set()  # it got there by polling the store

            server.start()  # same port and storage: stream and consumer are back
            await asyncio.wait_for(runner.following.wait(), WAIT)
            await publisher.publish_new()  # the relay publishing its backlog: skipped
            make_history(service, 2, prefix="after")
            await publisher.publish_new()
            await reaches(database_url, "pipelines", await head(database_url))
    finally:
        await client.close()
        server.stop()
    assert len(await rows(database_url)) == 6


class Gated(PerEventPipelines):
    """Holds the batch carrying one chosen event until the test opens the gate."""

    def __init__(self) -> None:
        self.hold: str | None = None
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        if event.subject == self.hold:
            self.entered.set()
            await self.gate.wait()
        await super().created(cur, event)


async def test_a_jump_in_stream_sequence_is_filled_from_the_store(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    projection = Gated()
    async with running(make_runner(projection, database_url, nats_url, nats_names)):
        first = service.create(ALICE, definition("first"), CTX).state.id
        projection.hold = str(first)
        await publisher.publish_new()
        await asyncio.wait_for(projection.entered.wait(), WAIT)  # runner is mid-batch
        lost = service.create(ALICE, definition("lost"), CTX).state.id
        last = service.create(ALICE, definition("last"), CTX).state.id
        published = await publisher.publish_new()
        lost_event = next(e for e in published if e.subject == str(lost))
        # The message is gone from the stream before the runner could fetch it.
        await publisher.js.delete_msg(nats_names.stream, publisher.sequences[lost_event.id])
        projection.gate.set()
        await reaches(database_url, "pipelines", await head(database_url))
    assert {r["id"] for r in await rows(database_url)} == {first, lost, last}


# 6. read-your-writes ----------------------------------------------------------------


async def test_wait_for_position(
    database_url: str, nats_names: NatsNames, service: PipelineService, pool: AsyncConnectionPool
) -> None:
    make_history(service, 3)
    top = await head(database_url)
    assert not await wait_for_position(pool, "pipelines", top, timeout=0.2)
    runner = make_runner(PipelinesProjection(), database_url, "nats://unused", nats_names)
    waiting = asyncio.create_task(wait_for_position(pool, "pipelines", top, timeout=WAIT))
    await caught_up(runner, database_url)
    assert await waiting
    started = time.monotonic()
    assert not await wait_for_position(pool, "pipelines", top + 1000, timeout=0.3)
    assert time.monotonic() - started < WAIT  # bounded
    # A projection that ignores every one of these events still reaches the position.
    tenants = make_runner(TenantsProjection(), database_url, "nats://unused", nats_names)
    await caught_up(tenants, database_url)
    assert await wait_for_position(pool, "tenants", top, timeout=1.0)

    status = {s["name"]: s for s in await projection_status(database_url, ALL_PROJECTIONS)}
    assert status["pipelines"]["position"] == top
    assert status["pipelines"]["lag"] == 0
    assert status["pipelines"]["max_position"] == top
    assert status["tenants"]["lag"] == 0
    service.create(ALICE, definition("one-more"), CTX)
    status = {s["name"]: s for s in await projection_status(database_url, ALL_PROJECTIONS)}
    assert status["pipelines"]["lag"] == 3  # the pipeline, its name claim and usage


# 7. queries -------------------------------------------------------------------------


async def walk(fetch: Callable[[str | None], Any], limit_pages: int = 100) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(limit_pages):
        page, cursor = await fetch(cursor)
        items.extend(page)
        if cursor is None:
            return items
    pytest.fail("pagination did not end")


async def test_list_pagination_filters_and_tenant_isolation(
    database_url: str, nats_names: NatsNames, service: PipelineService, pool: AsyncConnectionPool
) -> None:
    for i in range(13):
        tags = ("even",) if i % 2 == 0 else ("odd", "x_y")
        service.create(ALICE, definition(f"job-{i:02d}", tags=tags), CTX)
    service.create(ALICE, definition("Nightly 50%_done", tags=("special",)), CTX)
    theirs = service.create(BOB, definition("job-bob", tags=("even",)), CTX).state.id
    runner = make_runner(PipelinesProjection(), database_url, "nats://unused", nats_names)
    await caught_up(runner, database_url)
    queries = PipelineQueries(pool)

    for sort in ("created_at", "name", "updated_at"):
        for order in ("asc", "desc"):
            everything, cursor = await queries.list(T1, sort=sort, order=order, limit=500)
            assert cursor is None and len(everything) == 14
            keys = [(r[sort], UUID(r["id"])) for r in everything]
            if sort != "name":  # names follow the database collation, not Python's
                assert keys == sorted(keys, reverse=order == "desc")
            walked = await walk(
                lambda c, s=sort, o=order: queries.list(T1, sort=s, order=o, limit=4, cursor=c)
            )
            assert [r["id"] for r in walked] == [r["id"] for r in everything]

    # Stable under inserts: a page walk that sees a new pipeline still yields every
    # old one exactly once.
    first, cursor = await queries.list(T1, limit=5)
    service.create(ALICE, definition("job-new"), CTX)
    await caught_up(runner, database_url)
    rest = await walk(lambda c: queries.list(T1, limit=5, cursor=c or cursor))
    ids = [r["id"] for r in first + rest]
    assert len(ids) == len(set(ids)) == 15

    evens = await walk(lambda c: queries.list(T1, tags=["even"], limit=3, cursor=c))
    assert len(evens) == 7 and all("even" in r["tags"] for r in evens)
    assert [r["name"] for r in (await queries.list(T1, tags=["x_y"])).items] == [
        f"job-{i:02d}" for i in range(1, 13, 2)
    ]
    named = (await queries.list(T1, name="JOB-0")).items
    assert sorted(r["name"] for r in named) == [f"job-{i:02d}" for i in range(10)]
    # LIKE wildcards in the filter are literal characters.
    assert [r["name"] for r in (await queries.list(T1, name="50%_")).items] == ["Nightly 50%_done"]
    assert (await queries.list(T1, name="5_%")).items == []

    # Tenant isolation: another tenant's rows never appear; a platform admin sees all.
    assert all(r["tenant_id"] == T1 for r in await walk(lambda c: queries.list(T1, cursor=c)))
    assert [r["id"] for r in (await queries.list(T2)).items] == [str(theirs)]
    assert await queries.get(T1, theirs) is None
    assert (await queries.get(T2, theirs) or {})["name"] == "job-bob"
    assert (await queries.get(None, theirs) or {})["tenant_id"] == T2
    assert len(await walk(lambda c: queries.list(None, limit=7, cursor=c))) == 16

    with pytest.raises(ValueError, match="invalid cursor"):
        await queries.list(T1, cursor="not-a-cursor")
    with pytest.raises(ValueError, match="invalid cursor"):
        await queries.list(T1, cursor="eyJzIjoxfQ")  # valid base64 and JSON, wrong shape
    forged = encode_cursor("created_at", "asc", 5, "not-a-uuid")  # would be a SQL error
    with pytest.raises(ValueError, match="invalid cursor"):
        await queries.list(T1, cursor=forged)
    _, by_name = await queries.list(T1, sort="name", limit=2)
    assert by_name is not None
    with pytest.raises(ValueError, match="sort=name"):
        await queries.list(T1, sort="created_at", cursor=by_name)
    with pytest.raises(ValueError, match="sort must be"):
        await queries.list(T1, sort="tenant_id")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await queries.list(T1, limit=0)


async def test_tenants_read_model_and_queries(
    database_url: str, nats_names: NatsNames, event_store: NornEventStore, pool: AsyncConnectionPool
) -> None:
    ids = []
    for i in range(5):
        tenant = Tenant.create(
            tenant_id=uuid4(),
            name=f"team-{i}",
            description="",
            plan="pro" if i else "free",
            labels={"env": "test"} if i == 0 else {},
            ctx=CommandContext("system:admin", "corr-t"),
        )
        event_store.append(tenant)
        ids.append(str(tenant.id))
    await caught_up(
        make_runner(TenantsProjection(), database_url, "nats://unused", nats_names), database_url
    )
    queries = TenantQueries(pool)
    first = await queries.get(ids[0])
    assert first is not None
    assert (first["name"], first["plan"], first["status"], first["labels"]) == (
        "team-0",
        "free",
        "active",
        {"env": "test"},
    )
    assert await queries.get(str(uuid4())) is None
    assert await queries.get("not-a-uuid") is None
    walked = await walk(lambda c: queries.list(limit=2, cursor=c))
    assert [t["id"] for t in walked] == ids
    with pytest.raises(ValueError, match="invalid cursor"):
        await queries.list(cursor="%%%")
    assert await rebuilt_rows(database_url, TenantsProjection()) == await rows(
        database_url, "tenants"
    )


def test_all_projections_are_registered() -> None:
    assert {p.name for p in ALL_PROJECTIONS} == {
        "pipelines",
        "tenants",
        "api_keys",
        "users",
        "runs",
        "deployments",
        "jobs",
        "webhooks",
        "secrets",
        "connections",
        "audit_log",
    }
    with pytest.raises(ValueError, match="must match"):
        type("Bad", (Projection,), {"name": "Bad-Name", "tables": ()})


async def test_one_active_runner_per_projection_and_standby_takes_over(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    runners = [
        make_runner(PipelinesProjection(), database_url, nats_url, nats_names, standby_interval=0.1)
        for _ in range(2)
    ]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip(runners, stops, strict=True)]
    try:
        # Either may win the lock.
        waits = [asyncio.ensure_future(r.following.wait()) for r in runners]
        await asyncio.wait(waits, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await asyncio.sleep(0.3)  # several standby retries
        assert [r.is_leader for r in runners].count(True) == 1
        active = 0 if runners[0].is_leader else 1
        standby = 1 - active
        assert not runners[standby].following.is_set()
        stops[active].set()
        await asyncio.wait_for(tasks[active], WAIT)
        await asyncio.wait_for(runners[standby].following.wait(), WAIT)  # it took over
        make_history(service, 3)
        await publisher.publish_new()
        await reaches(database_url, "pipelines", await head(database_url))
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert len(await rows(database_url)) == 3
