"""What a projection's bookkeeping costs: a batch with nothing to apply touches no
database; the position it passes is kept in memory, published to waiters in the same
process, and persisted lazily (within persist_interval, and on stop); a restart reads
the unpersisted stretch again and applies nothing twice."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import nats
import psycopg
import pytest
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from application.event_store import NornEventStore
from application.pipelines import PipelineService
from domain.pipeline import PipelineDefinition, StepSpec
from domain.run import Run, Trigger
from infrastructure.envelope import CloudEvent
from infrastructure.postgres import create_read_pool
from projections import (
    AuditLogProjection,
    LivePositions,
    PipelinesProjection,
    RunnerSessions,
    wait_for_position,
)
from projections.broadcast import follow_positions, positions_subject
from projections.members import Members
from projections.positions import PositionKeeper
from projections.projection import apply_batch, apply_batches
from projections.runs import RunsProjection
from tests.conftest import NatsNames, seed_tenant
from tests.integration.projection_support import (
    consumed,
    other_events,
    passes,
    passes_row,
    publisher_fixture,  # noqa: F401 - the `publisher` fixture
    service_fixture,  # noqa: F401 - the `service` fixture
    tracking_row,
)
from tests.integration.test_projections import (
    ALICE,
    BOB,
    CTX,
    T1,
    T2,
    WAIT,
    PerEventPipelines,
    Publisher,
    definition,
    head,
    make_runner,
    rows,
    running,
)

LAZY: dict[str, Any] = {"persist_interval": 60, "idle_persist": None}
"""A runner that writes the positions it passed only every minute and on stop."""


class Counting(PerEventPipelines):
    """Counts handler calls: nothing may be applied twice."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        self.applied.append(event.position)
        await super().created(cur, event)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    read_pool = create_read_pool(database_url, max_size=2)
    await read_pool.open()
    yield read_pool
    await read_pool.close()


async def test_a_batch_with_nothing_to_apply_touches_no_database(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    event_store: NornEventStore,
    publisher: Publisher,
) -> None:
    sessions = RunnerSessions(database_url)
    await sessions.open()
    projection = Counting()
    runner = make_runner(
        projection,
        database_url,
        nats_url,
        nats_names,
        **LAZY,
        sessions=sessions,
    )
    try:
        async with running(runner):
            service.create(ALICE, definition("applied"), CTX)
            await publisher.publish_new()
            await passes(runner, await head(database_url))
            assert len(projection.applied) == 1
            before = await tracking_row(database_url)
            requests = sessions.pool.get_stats().get("requests_num", 0)

            other_events(event_store, 5)
            await publisher.publish_new()
            top = await head(database_url)
            await passes(runner, top)

            # No transaction, no lock, no update: not even a connection was taken.
            assert await tracking_row(database_url) == before
            assert sessions.pool.get_stats().get("requests_num", 0) == requests
            assert runner.keeper.persisted < runner.keeper.passed == top
            assert len(projection.applied) == 1
    finally:
        await sessions.close()


async def test_the_passed_position_is_persisted_within_the_interval_and_on_stop(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    event_store: NornEventStore,
    publisher: Publisher,
) -> None:
    interval = 0.2
    runner = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        persist_interval=interval,
        idle_persist=None,
    )
    async with running(runner):
        other_events(event_store, 3)
        await publisher.publish_new()
        top = await head(database_url)
        await passes(runner, top)
        passed_at = time.monotonic()
        while (await tracking_row(database_url))[2] < top:
            assert time.monotonic() - passed_at < interval + 2.0, "not persisted in time"
            await asyncio.sleep(0.02)

    lazy = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        **LAZY,
    )
    async with running(lazy):
        other_events(event_store, 3)
        await publisher.publish_new()
        top = await head(database_url)
        await passes(lazy, top)
        assert (await tracking_row(database_url))[2] < top
    assert (await tracking_row(database_url))[2] == top  # persisted on the way out


async def test_an_idle_runner_writes_the_positions_it_passed(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    event_store: NornEventStore,
    publisher: Publisher,
) -> None:
    """A command's last event is often one the projection does not handle: its row holds
    the command's position once the runner has nothing more to do, not an interval on."""
    runner = make_runner(
        PipelinesProjection(), database_url, nats_url, nats_names, persist_interval=60
    )
    async with running(runner):
        other_events(event_store, 3)
        await publisher.publish_new()
        top = await head(database_url)
        await passes(runner, top)
        deadline = time.monotonic() + 2.0  # the interval is 60 s
        while (await tracking_row(database_url))[2] < top:
            assert time.monotonic() < deadline, "not written when the runner went idle"
            await asyncio.sleep(0.01)


async def test_an_in_process_wait_returns_for_a_position_passed_without_a_commit(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    event_store: NornEventStore,
    publisher: Publisher,
    pool: AsyncConnectionPool,
) -> None:
    positions = LivePositions()
    runner = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        **LAZY,
        positions=positions,
    )
    async with running(runner):
        other_events(event_store, 2)
        top = await head(database_url)
        # As read_your_writes waits: the database row and this process's runners.
        waiting = asyncio.create_task(
            wait_for_position(pool, "pipelines", top, WAIT, live=positions)
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await publisher.publish_new()
        assert await asyncio.wait_for(waiting, WAIT)
        # Answered by the runner's memory: the row has not moved.
        assert (await tracking_row(database_url))[2] < top
        # Without the live positions, the same wait can only time out.
        assert not await wait_for_position(pool, "pipelines", top, 0.2)


async def test_a_wait_in_another_process_returns_for_a_position_passed_without_a_commit(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    event_store: NornEventStore,
    publisher: Publisher,
    pool: AsyncConnectionPool,
) -> None:
    """An API process without a projector (its own LivePositions, fed over NATS by
    follow_positions) is told the runner's positions, not only the row's."""
    runner = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        **LAZY,
    )
    elsewhere = LivePositions()  # the API process's
    nc = await nats.connect(nats_url)
    try:
        await follow_positions(nc, nats_names.prefix, elsewhere)
        async with running(runner):
            other_events(event_store, 2)
            top = await head(database_url)
            waiting = asyncio.create_task(
                wait_for_position(pool, "pipelines", top, WAIT, live=elsewhere)
            )
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await publisher.publish_new()
            assert await asyncio.wait_for(waiting, WAIT)
            assert elsewhere.get("pipelines") >= top
            assert (await tracking_row(database_url))[2] < top  # the row has not moved
            # Garbage on the subject is ignored, and never moves a position back.
            await nc.publish(positions_subject(nats_names.prefix), b"not json")
            await nc.publish(positions_subject(nats_names.prefix), b'{"pipelines": 1}')
            await nc.flush()
            await asyncio.sleep(0.1)
            assert elsewhere.get("pipelines") >= top
    finally:
        await nc.close()


async def test_a_restart_rereads_the_unpersisted_stretch_and_applies_nothing_twice(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    event_store: NornEventStore,
    publisher: Publisher,
) -> None:
    first = Counting()
    runner = make_runner(first, database_url, nats_url, nats_names, **LAZY)
    async with running(runner):
        published: list[CloudEvent] = []
        for i in range(3):
            # Separate batches: one with something to apply, one with nothing.
            service.create(ALICE, definition(f"p-{i}"), CTX)
            published += await publisher.publish_new()
            await passes(runner, await head(database_url))
            other_events(event_store, 2)
            published += await publisher.publish_new()
            await passes(runner, await head(database_url))
        top = await head(database_url)
        persisted = runner.keeper.persisted
        assert persisted < top
    assert len(first.applied) == 3
    before = await rows(database_url)
    # The process died before persisting what it had passed: the row is where the last
    # batch that applied something left it.
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE projection_tracking SET position = %s WHERE name = 'pipelines'",
            (persisted,),
        )

    again = Counting()
    restarted = make_runner(again, database_url, nats_url, nats_names)
    async with running(restarted):
        # The catch-up read the stretch again; a redelivery of it is skipped as well.
        stretch = [e for e in published if e.position > persisted]
        assert stretch
        for event in stretch:
            await publisher.publish(event, msg_id=str(uuid4()))
        await consumed(publisher, restarted)
        assert again.applied == []
        assert await rows(database_url) == before
        service.create(ALICE, definition("after"), CTX)
        await publisher.publish_new()
        await passes_row(database_url, await head(database_url))
    assert len(again.applied) == 1
    assert len(await rows(database_url)) == 4


async def test_a_runner_follows_on_while_every_pooled_connection_is_busy(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    event_store: NornEventStore,
    publisher: Publisher,
) -> None:
    """Another projection of the process holds the pool's only connection (a long batch):
    a position falls due meanwhile, and the runner goes on passing events in memory
    instead of waiting for a connection to persist it; it persists once one is free."""
    sessions = RunnerSessions(database_url, max_size=1)
    await sessions.open()
    runner = make_runner(
        PipelinesProjection(), database_url, nats_url, nats_names, sessions=sessions
    )
    try:
        async with running(runner):
            async with sessions.pool.connection():
                other_events(event_store, 2)
                await publisher.publish_new()
                first = await head(database_url)
                await passes(runner, first)
                await asyncio.sleep(0.2)  # past persist_interval (0.05): now due
                other_events(event_store, 2)
                await publisher.publish_new()
                top = await head(database_url)
                await passes(runner, top)  # not stuck behind the busy pool
                assert (await tracking_row(database_url))[2] < first
            await passes_row(database_url, top)
    finally:
        await sessions.close()


class StatementsSeen(AsyncCursor[Any]):
    """A cursor that notes every statement it sends."""

    seen: list[str] = []

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        StatementsSeen.seen.append(str(query))
        return await super().execute(query, params, **kwargs)

    @staticmethod
    def writes() -> list[str]:
        """The statements of the handlers: not the transaction's or the tracking's."""
        return [
            q
            for q in StatementsSeen.seen
            if "projection_tracking" not in q and q not in ("BEGIN", "COMMIT")
        ]


async def test_a_batch_locks_and_moves_its_tracking_row_in_one_statement(
    database_url: str, service: PipelineService, publisher: Publisher
) -> None:
    service.create(ALICE, definition("first"), CTX)
    first = await publisher.publish_new()
    service.create(ALICE, definition("second"), CTX)
    second = await publisher.publish_new()
    projection = PipelinesProjection()
    async with await AsyncConnection.connect(
        database_url, autocommit=True, cursor_factory=StatementsSeen
    ) as conn:
        await apply_batch(conn, projection, first)  # the first batch ever makes the row
        StatementsSeen.seen = []

        assert await apply_batch(conn, projection, second) == second[-1].position

        tracking = [q for q in StatementsSeen.seen if "projection_tracking" in q]
        assert len(tracking) == 1  # not a locking read and an update
        assert (await tracking_row(database_url))[2] == second[-1].position
        StatementsSeen.seen = []
        # Again (a redelivery): nothing applied, and no new version of the row (its
        # xmin, position and updated_at stay; the lock marks xmax, as any lock does).
        xmin, _, position, updated_at = await tracking_row(database_url)
        assert await apply_batch(conn, projection, second) == second[-1].position
        assert StatementsSeen.writes() == []
        after = await tracking_row(database_url)
        assert (after[0], after[2], after[3]) == (xmin, position, updated_at)
    assert [name for (name,) in await rows_named(database_url)] == ["first", "second"]


async def rows_named(database_url: str) -> list[tuple[str]]:
    async with await AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT name FROM pipelines ORDER BY name")
        return await cur.fetchall()


def syncs_and_flushes(trace: Any) -> tuple[int, int]:
    """What the client sent that waits for answers: Syncs (each ends a round trip of
    pipeline mode) and the Flushes before the first Sync (each one more)."""
    trace.seek(0)
    sent = [line.rstrip().split("\t")[3] for line in trace if "\tF\t" in line]
    return sent.count("Sync"), sent[: sent.index("Sync")].count("Flush")


async def test_a_runners_batch_for_several_read_models_is_one_round_trip(
    database_url: str, service: PipelineService, publisher: Publisher
) -> None:
    """On floors where the tracking rows are (a steady runner's), BEGIN, the rows' move,
    every handler's statements and the COMMIT go together: one wait for PostgreSQL's
    answers, however many read models and events."""
    for name in ("one", "two", "three"):
        service.create(ALICE, definition(name), CTX)
    events = await publisher.publish_new()
    projections = [PipelinesProjection(), AuditLogProjection(), RunsProjection()]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await apply_batches(conn, [(p, 0) for p in projections], events[:1])  # the rows
        members = [(p, events[0].position) for p in projections]
        with tempfile.TemporaryFile("w+") as trace:
            conn.pgconn.trace(trace.fileno())
            try:
                await apply_batches(conn, members, events, rows_at_floors=True)
            finally:
                conn.pgconn.untrace()
            assert syncs_and_flushes(trace) == (1, 0)
        assert conn.info.transaction_status == TransactionStatus.IDLE
    assert [name for (name,) in await rows_named(database_url)] == ["one", "three", "two"]
    assert (await tracking_row(database_url))[2] == events[-1].position


async def test_a_batch_on_floors_behind_its_rows_is_refused_then_applied_on_the_rows(
    database_url: str, service: PipelineService, publisher: Publisher
) -> None:
    """Floors behind the rows (another transaction moved them: a rebuild's swap, a
    leader before this one): the one-round-trip batch is refused and rolled back, then
    BEGIN with the move (whose answer says which events are fresh), then the handlers
    with the COMMIT: nothing is applied twice (a pipeline's row twice would not insert,
    and its count would be off)."""
    for name in ("one", "two"):
        service.create(ALICE, definition(name), CTX)
    events = await publisher.publish_new()
    first = next(i for i, e in enumerate(events) if e.type == "norn.pipeline.created.v1")
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await apply_batch(conn, PipelinesProjection(), events[:-1])
        behind = events[first].position  # as a leader before the one that went on knew
        with tempfile.TemporaryFile("w+") as trace:
            conn.pgconn.trace(trace.fileno())
            try:
                [position] = await apply_batches(
                    conn, [(PipelinesProjection(), behind)], events, rows_at_floors=True
                )
            finally:
                conn.pgconn.untrace()
            assert syncs_and_flushes(trace)[0] == 2  # the refused attempt's, the batch's
        assert position == events[-1].position
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert (await pipelines_and_counts(conn))[1] == [(T1, 2)]
    assert [name for (name,) in await rows_named(database_url)] == ["one", "two"]


class Failing(PerEventPipelines):
    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        await cur.execute("INSERT INTO no_such_table VALUES (1)")


async def test_a_failed_batch_leaves_nothing_and_no_open_transaction(
    database_url: str, service: PipelineService, publisher: Publisher
) -> None:
    service.create(ALICE, definition("first"), CTX)
    first = await publisher.publish_new()
    service.create(ALICE, definition("second"), CTX)
    second = await publisher.publish_new()
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await apply_batch(conn, PipelinesProjection(), first)
        with pytest.raises(psycopg.errors.UndefinedTable):
            await apply_batches(conn, [(Failing(), 0), (AuditLogProjection(), 0)], second)
        assert conn.info.transaction_status == TransactionStatus.IDLE
        # The connection is fit for the next batch, which sees the rows as they were.
        assert await apply_batch(conn, PipelinesProjection(), second) == second[-1].position
    assert [name for (name,) in await rows_named(database_url)] == ["first", "second"]


class Slow(PerEventPipelines):
    """Holds its batch's transaction open a moment in each handler, and counts."""

    def __init__(self, applied: list[int]) -> None:
        self.applied = applied

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        self.applied.append(event.position)
        await asyncio.sleep(0.3)
        await super().created(cur, event)


async def test_two_batches_racing_for_the_tracking_row_apply_each_event_once(
    database_url: str, service: PipelineService, publisher: Publisher
) -> None:
    """The second batch waits for the first's lock, then sees the row the first left
    (not the one its own snapshot began with) and skips what the first applied."""
    for name in ("a", "b", "c"):
        service.create(ALICE, definition(name), CTX)
    events = await publisher.publish_new()
    applied: list[int] = []
    first, second = Slow(applied), Slow(applied)
    async with (
        await AsyncConnection.connect(database_url, autocommit=True) as one,
        await AsyncConnection.connect(database_url, autocommit=True) as two,
    ):
        await apply_batch(one, first, events[:1])  # the row exists: both batches lock it
        one_batch = asyncio.create_task(apply_batch(one, first, events[:4]))
        await asyncio.sleep(0.1)  # the first holds the row, inside its handlers
        overlapping = await apply_batch(two, second, events)
        assert await one_batch == events[3].position
    assert overlapping == events[-1].position
    created = [e.position for e in events if e.type == "norn.pipeline.created.v1"]
    assert sorted(applied) == created  # each once, by whichever batch came first
    assert [name for (name,) in await rows_named(database_url)] == ["a", "b", "c"]
    assert (await tracking_row(database_url))[2] == events[-1].position


async def test_the_audit_log_writes_a_batch_in_one_statement(
    database_url: str, service: PipelineService, publisher: Publisher
) -> None:
    for name in ("a", "b", "c"):
        service.create(ALICE, definition(name), CTX)
    events = await publisher.publish_new()
    assert len(events) >= 6  # each create: its pipeline and its name claim
    projection = AuditLogProjection()
    async with await AsyncConnection.connect(
        database_url, autocommit=True, cursor_factory=StatementsSeen
    ) as conn:
        await apply_batch(conn, projection, events[:1])  # the first batch ever makes the row
        StatementsSeen.seen = []

        await apply_batch(conn, projection, events)

        writes = StatementsSeen.writes()
        assert len(writes) == 1  # not one INSERT per event
        cur = await conn.execute("SELECT position, type FROM audit_log ORDER BY position")
        assert await cur.fetchall() == [(e.position, e.type) for e in events]


async def pipelines_and_counts(conn: AsyncConnection[Any]) -> tuple[list[Any], list[Any]]:
    cur = await conn.execute("SELECT * FROM pipelines ORDER BY id")
    pipelines = await cur.fetchall()
    cur = await conn.execute("SELECT tenant_id, live FROM pipeline_counts ORDER BY tenant_id")
    return pipelines, await cur.fetchall()


async def test_the_pipelines_read_model_writes_a_stretch_of_creates_in_one_statement(
    database_url: str, event_store: NornEventStore, service: PipelineService, publisher: Publisher
) -> None:
    """A burst of creates (each beside its name claim, which the read model ignores): their
    rows in one statement and the tenants' live counts in one more. With revisions,
    a rollback and deletes among them, the rows and counts are the ones applied event by
    event."""
    seed_tenant(event_store, UUID(T2), "t2")
    for name in ("a", "b", "c"):
        service.create(ALICE, definition(name), CTX)
    burst = await publisher.publish_new()
    gone = service.create(BOB, definition("gone"), CTX).state.id
    kept = service.create(BOB, definition("kept"), CTX).state.id
    service.revise(BOB, kept, definition("kept", path="b.jsonl"), CTX)
    service.roll_back(BOB, kept, 1, CTX)
    service.delete(BOB, gone, CTX)
    service.create(ALICE, definition("d"), CTX)
    made_and_deleted = service.create(ALICE, definition("e"), CTX).state.id
    service.delete(ALICE, made_and_deleted, CTX)
    mixed = await publisher.publish_new()
    async with await AsyncConnection.connect(
        database_url, autocommit=True, cursor_factory=StatementsSeen
    ) as conn:
        StatementsSeen.seen = []
        await apply_batch(conn, PipelinesProjection(), burst)
        assert len(StatementsSeen.writes()) == 2  # not two per create
        await apply_batch(conn, PipelinesProjection(), mixed)
        batched = await pipelines_and_counts(conn)
        await conn.execute("TRUNCATE pipelines, pipeline_counts")
        await conn.execute("DELETE FROM projection_tracking WHERE name = 'pipelines'")
        await apply_batch(conn, PerEventPipelines(), burst)
        await apply_batch(conn, PerEventPipelines(), mixed)
        assert await pipelines_and_counts(conn) == batched
    assert [name for (name,) in await rows_named(database_url)] == ["a", "b", "c", "d", "kept"]
    assert batched[1] == [(T1, 4), (T2, 1)]


async def test_the_runs_read_model_writes_a_burst_of_queued_runs_in_three_statements(
    database_url: str, event_store: NornEventStore, publisher: Publisher
) -> None:
    """A scheduler's burst: every run's row, every step's row and the day's count, in
    three statements whatever the number of runs, and the same rows one would write."""
    steps = (
        StepSpec("read", "Input.file", {"path": "in.jsonl"}),
        StepSpec("write", "Output.file", {"path": "out.jsonl"}, depends_on=("read",)),
    )
    definition_ = PipelineDefinition(name="p", steps=steps)
    due = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    runs = [
        Run.queue(
            run_id=uuid4(),
            tenant_id="t1",
            pipeline_id=str(uuid4()),
            pipeline_name="p",
            revision=2,
            definition=definition_,
            params={"n": n},
            trigger=Trigger("job", "j1", scheduled_for=due) if n else Trigger("user", "u1"),
            ctx=CTX,
        )
        for n in range(3)
    ]
    event_store.append(*runs)
    events = await publisher.publish_new()
    projection = RunsProjection()
    async with await AsyncConnection.connect(
        database_url, autocommit=True, cursor_factory=StatementsSeen
    ) as conn:
        StatementsSeen.seen = []
        await apply_batch(conn, projection, events)
        writes = StatementsSeen.writes()
        assert len(writes) == 3  # not three per run
        cur = await conn.execute(
            "SELECT id, status, trigger_kind, trigger_id, scheduled_for, params, revision,"
            " queued_at, position, attempt, cancel_requested FROM runs ORDER BY position"
        )
        assert await cur.fetchall() == [
            (
                run.id,
                "queued",
                "job" if n else "user",
                "j1" if n else "u1",
                due if n else None,
                {"n": n},
                2,
                event.time,
                event.position,
                0,  # the columns the events do not name keep their defaults
                False,
            )
            for n, (run, event) in enumerate(zip(runs, events, strict=True))
        ]
        cur = await conn.execute(
            "SELECT run_id, name, ordinal, plugin, depends_on, status FROM run_steps"
            " ORDER BY run_id, ordinal"
        )
        assert await cur.fetchall() == sorted(
            (run.id, name, i, plugin, depends, "pending")
            for run in runs
            for i, (name, plugin, depends) in enumerate(
                [("read", "Input.file", []), ("write", "Output.file", ["read"])]
            )
        )
        cur = await conn.execute("SELECT tenant_id, queued FROM run_day_counts")
        assert await cur.fetchall() == [("t1", 3)]


async def test_a_batch_with_work_for_several_read_models_commits_once(
    database_url: str,
    service: PipelineService,
    publisher: Publisher,
    pool: AsyncConnectionPool,
) -> None:
    service.create(ALICE, definition("together"), CTX)
    events = await publisher.publish_new()
    top = events[-1].position
    keepers = [PositionKeeper(p) for p in (PipelinesProjection(), RunsProjection())]
    keepers.append(PositionKeeper(AuditLogProjection()))
    await Members(keepers).apply(pool, events)

    async with await AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT name, xmin::text, position FROM projection_tracking")
        written = {name: (xmin, position) for name, xmin, position in await cur.fetchall()}
    # The pipeline's and the audit log's rows, moved by one transaction (one xmin); the
    # runs read model had nothing to apply: no row written, its position kept in memory.
    assert set(written) == {"pipelines", "audit_log"}
    assert written["pipelines"] == written["audit_log"]
    assert written["pipelines"][1] == top
    assert [keeper.passed for keeper in keepers] == [top, top, top]
    assert [name for (name,) in await rows_named(database_url)] == ["together"]
