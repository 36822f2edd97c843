"""What a projection's bookkeeping costs: a batch with nothing to apply touches no
database; the position it passes is kept in memory, published to waiters in the same
process, and persisted lazily (within persist_interval, and on stop); a restart reads
the unpersisted stretch again and applies nothing twice. And the runners of a process
share one leadership session and a small pool, re-competing when the session dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import nats
import pytest
from nats.aio.client import Client
from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool

from application.event_store import NornEventStore
from application.pipelines import PipelineService
from infrastructure.envelope import CloudEvent
from infrastructure.nats import ensure_stream
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.postgres import create_read_pool
from projections import (
    ALL_PROJECTIONS,
    LivePositions,
    PipelinesProjection,
    ProjectionRunner,
    RunnerSessions,
    wait_for_position,
)
from projections.sessions import LOCKS_APPLICATION, POOL_APPLICATION
from projections.usage import ReadModelUsage
from tests.conftest import NatsNames, seed_tenant
from tests.integration.test_projections import (
    ALICE,
    CTX,
    T1,
    WAIT,
    Publisher,
    definition,
    head,
    make_runner,
    rows,
    running,
)


class Counting(PipelinesProjection):
    """Counts handler calls: nothing may be applied twice."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    async def created(self, cur: AsyncCursor[Any], event: CloudEvent) -> None:
        self.applied.append(event.position)
        await super().created(cur, event)


@pytest.fixture
def service(event_store: NornEventStore, usage: ReadModelUsage) -> PipelineService:
    seed_tenant(event_store, UUID(T1), "t1")
    return PipelineService(event_store, PluginCatalog(), usage)


@pytest.fixture
async def publisher(
    nats_url: str, nats_names: NatsNames, database_url: str
) -> AsyncIterator[Publisher]:
    client: Client = await nats.connect(nats_url)
    js = client.jetstream()
    await ensure_stream(js, nats_names.stream, nats_names.prefix)
    yield Publisher(js, nats_names, database_url)
    await client.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    read_pool = create_read_pool(database_url, max_size=2)
    await read_pool.open()
    yield read_pool
    await read_pool.close()


def other_events(event_store: NornEventStore, count: int) -> None:
    """Events the pipelines projection has no handler for (tenants)."""
    for _ in range(count):
        seed_tenant(event_store, uuid4(), f"other-{uuid4().hex[:8]}")


async def tracking_row(database_url: str) -> tuple[Any, ...]:
    """The pipelines row with its system columns: an UPDATE makes a new row version (a
    new xmin), and a SELECT ... FOR UPDATE marks the row (xmax), even with no change."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT xmin::text, xmax::text, position, updated_at FROM projection_tracking"
            " WHERE name = 'pipelines'"
        )
        row = await cur.fetchone()
        return tuple(row) if row else (None, None, 0, None)  # never persisted yet


async def passes(runner: ProjectionRunner, position: int) -> None:
    """Until the runner has passed `position` (in memory, whatever the row says)."""
    deadline = time.monotonic() + WAIT
    while runner.keeper.passed < position:
        assert time.monotonic() < deadline, f"the runner did not pass {position}"
        await runner.positions.moved(0.1)


async def consumed(publisher: Publisher, runner: ProjectionRunner) -> None:
    """Until the runner's consumer has nothing pending or unacked."""
    deadline = time.monotonic() + WAIT
    while True:
        info = await publisher.js.consumer_info(publisher.names.stream, runner.durable_name)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        assert time.monotonic() < deadline, "the runner did not consume its messages"
        await asyncio.sleep(0.05)


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
        projection, database_url, nats_url, nats_names, persist_interval=60, sessions=sessions
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
        PipelinesProjection(), database_url, nats_url, nats_names, persist_interval=interval
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
        PipelinesProjection(), database_url, nats_url, nats_names, persist_interval=60
    )
    async with running(lazy):
        other_events(event_store, 3)
        await publisher.publish_new()
        top = await head(database_url)
        await passes(lazy, top)
        assert (await tracking_row(database_url))[2] < top
    assert (await tracking_row(database_url))[2] == top  # persisted on the way out


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
        persist_interval=60,
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


async def test_a_restart_rereads_the_unpersisted_stretch_and_applies_nothing_twice(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    event_store: NornEventStore,
    publisher: Publisher,
) -> None:
    first = Counting()
    runner = make_runner(first, database_url, nats_url, nats_names, persist_interval=60)
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


async def passes_row(database_url: str, position: int) -> None:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await wait_for_position(conn, "pipelines", position, WAIT)


async def backends(database_url: str, *applications: str) -> list[tuple[str, int]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT application_name, pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY(%s)",
            (list(applications),),
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def advisory_locks(database_url: str, pid: int | None) -> int:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s",
            (pid,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def test_runners_share_one_session_and_compete_again_when_it_dies(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    sessions = RunnerSessions(database_url, check_interval=0.2)
    await sessions.open()
    runners = [
        make_runner(type(p)(), database_url, nats_url, nats_names, sessions=sessions)
        for p in ALL_PROJECTIONS
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        for r in runners:
            await asyncio.wait_for(r.following.wait(), WAIT)
        # One session for every lock, and a pool of at most two (it was two each).
        held = await backends(database_url, LOCKS_APPLICATION, POOL_APPLICATION)
        assert [name for name, _ in held].count(LOCKS_APPLICATION) == 1
        assert len(held) <= 3
        old = sessions.locks.backend_pid
        assert await advisory_locks(database_url, old) == len(runners)

        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        deadline = time.monotonic() + WAIT
        while True:
            pid = sessions.locks.backend_pid
            if pid not in (None, old) and await advisory_locks(database_url, pid) == len(runners):
                break
            assert time.monotonic() < deadline, "the runners did not take their locks again"
            await asyncio.sleep(0.05)
        for r in runners:
            await asyncio.wait_for(r.following.wait(), WAIT)
        service.create(ALICE, definition("after-the-loss"), CTX)
        await publisher.publish_new()
        await passes_row(database_url, await head(database_url))
        assert len(await rows(database_url)) == 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        await sessions.close()


async def test_two_runners_of_one_projection_on_one_session_do_not_both_lead(
    database_url: str, nats_url: str, nats_names: NatsNames
) -> None:
    sessions = RunnerSessions(database_url)
    await sessions.open()
    runners = [
        make_runner(
            PipelinesProjection(),
            database_url,
            nats_url,
            nats_names,
            sessions=sessions,
            standby_interval=0.05,
        )
        for _ in range(2)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        waits = [asyncio.ensure_future(r.following.wait()) for r in runners]
        await asyncio.wait(waits, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await asyncio.sleep(0.3)  # several standby retries on the same session
        assert [r.is_leader for r in runners].count(True) == 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        await sessions.close()


async def test_the_runners_of_a_process_persist_their_positions_together(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    sessions = RunnerSessions(database_url)
    await sessions.open()
    others = [p for p in ALL_PROJECTIONS if p.name != "pipelines"]
    # The default interval: ample time for every runner to pass the same events.
    runners = [
        make_runner(
            type(p)(), database_url, nats_url, nats_names, sessions=sessions, persist_interval=1.0
        )
        for p in others
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        for r in runners:
            await asyncio.wait_for(r.following.wait(), WAIT)
        for _ in range(int(WAIT / 0.05)):  # until what the start-up passed is written
            if all(r.keeper.persist_in() is None for r in runners):
                break
            await asyncio.sleep(0.05)
        service.create(ALICE, definition("for-pipelines-only"), CTX)
        await publisher.publish_new()
        top = await head(database_url)
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + WAIT
            while True:
                cur = await conn.execute(
                    "SELECT name, position, xmin::text FROM projection_tracking"
                    " WHERE name = ANY(%s)",
                    ([p.name for p in others],),
                )
                tracked = await cur.fetchall()
                if len(tracked) == len(others) and all(r[1] == top for r in tracked):
                    break
                assert time.monotonic() < deadline, f"not persisted: {tracked}"
                await asyncio.sleep(0.05)
        # Written by one transaction: the same row version creator for all of them.
        assert len({r[2] for r in tracked}) == 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        await sessions.close()
