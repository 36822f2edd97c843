"""The projection runners of one process share one leadership session (every advisory
lock on it, competing again when it dies) and a small pool, and write the positions
they passed without a commit together, in one statement."""

from __future__ import annotations

import asyncio
import time

from psycopg import AsyncConnection

from application.pipelines import PipelineService
from infrastructure.leadership import LOCKS_APPLICATION
from projections import ALL_PROJECTIONS, PipelinesProjection, RunnerSessions
from projections.sessions import POOL_APPLICATION
from tests.conftest import NatsNames
from tests.integration.projection_support import (
    passes_row,
    publisher_fixture,  # noqa: F401 - the `publisher` fixture
    service_fixture,  # noqa: F401 - the `service` fixture
)
from tests.integration.test_projections import (
    ALICE,
    CTX,
    WAIT,
    Publisher,
    definition,
    head,
    make_runner,
    rows,
)


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
        # One session for every lock, and a pool of at most three (it was two each).
        held = await backends(database_url, LOCKS_APPLICATION, POOL_APPLICATION)
        assert [name for name, _ in held].count(LOCKS_APPLICATION) == 1
        assert len(held) <= 4
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
    # The runners with nothing to apply for a pipeline create (not pipelines, not the
    # audit log, which records every event): they only pass its position.
    others = [p for p in ALL_PROJECTIONS if p.handler("norn.pipeline.created.v1") is None]
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
