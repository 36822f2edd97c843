"""Leadership by session advisory locks against a real PostgreSQL: of two holders one
wins; killing the winner's session hands leadership to the other; leaving releases it.
Each AdvisoryLocks stands for one process (its own session). And the roles of one
process hold all their locks on one session."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from infrastructure.leadership import (
    LOCKS_APPLICATION,
    AdvisoryLocks,
    LeadershipLost,
    Lease,
    lock_key,
)
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import ALL_ROLES, run_settings

KEY = lock_key("test", "leadership")
CHECK = 0.1  # ping the session this often, so a dead one is noticed quickly
WAIT = 10.0


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[tuple[AdvisoryLocks, AdvisoryLocks]]:
    a = AdvisoryLocks(database_url, check_interval=CHECK)
    b = AdvisoryLocks(database_url, check_interval=CHECK)
    yield a, b
    await a.close()
    await b.close()


async def terminate(database_url: str, pid: int | None) -> None:
    assert pid is not None
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(CHECK / 2)


async def test_of_two_holders_one_wins_and_killing_its_session_hands_over(
    database_url: str, sessions: tuple[AdvisoryLocks, AdvisoryLocks]
) -> None:
    a, b = (Lease(locks, KEY) for locks in sessions)
    assert await a.hold()
    assert not await b.hold()
    assert (a.held, b.held) == (True, False)
    for _ in range(3):  # standing by changes nothing
        await asyncio.sleep(CHECK)
        assert await a.hold() and not await b.hold()

    await terminate(database_url, sessions[0].backend_pid)
    # The winner notices at its next ping (within CHECK) and gives up; the other takes it.
    with pytest.raises(LeadershipLost):
        await asyncio.sleep(CHECK)
        await a.hold()
    assert not a.held
    await until(b.hold, "the standby did not take over")
    assert not await a.hold()  # competing again: the lock is taken


async def test_two_holders_on_one_session_do_not_both_lead(database_url: str) -> None:
    """Advisory locks are re-entrant within a session; the helper is not."""
    locks = AdvisoryLocks(database_url, check_interval=CHECK)
    try:
        a, b = Lease(locks, KEY), Lease(locks, KEY)
        assert await a.hold()
        assert not await b.hold()
        await a.release()
        assert await b.hold()
    finally:
        await locks.close()


async def test_leadership_stands_by_until_the_leader_dies_and_releases_on_leaving(
    database_url: str, sessions: tuple[AdvisoryLocks, AdvisoryLocks]
) -> None:
    first, second = sessions
    stop = asyncio.Event()
    leading = asyncio.Event()
    lost = asyncio.Event()

    async def leader() -> None:
        async with first.leadership(KEY, stop, CHECK) as check:
            assert check is not None
            leading.set()
            try:
                while True:
                    await check()
                    await asyncio.sleep(CHECK / 2)
            except LeadershipLost:
                lost.set()

    async def standby() -> str:
        async with second.leadership(KEY, stop, CHECK) as check:
            assert check is not None
            await check()
            return "leads"

    leading_task = asyncio.create_task(leader())
    await asyncio.wait_for(leading.wait(), WAIT)
    standing_by = asyncio.create_task(standby())
    await asyncio.sleep(3 * CHECK)
    assert not standing_by.done()  # several standby attempts, none won

    await terminate(database_url, first.backend_pid)
    await asyncio.wait_for(lost.wait(), WAIT)
    assert await asyncio.wait_for(standing_by, WAIT) == "leads"
    await leading_task
    # `standby` left its block: the lock is free again at once.
    assert await Lease(first, KEY).hold()


async def test_a_stop_while_standing_by_yields_no_check(
    sessions: tuple[AdvisoryLocks, AdvisoryLocks],
) -> None:
    first, second = sessions
    assert await Lease(first, KEY).hold()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(3 * CHECK, stop.set)
    async with second.leadership(KEY, stop, CHECK) as check:
        assert check is None


async def test_migrations_wait_for_the_migration_lock(database_url: str) -> None:
    """The same key scheme, as a blocking lock: a second migrator waits its turn."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("migrations", "schema"),))
        finished = threading.Event()
        migrating = threading.Thread(target=lambda: (migrate(database_url), finished.set()))
        migrating.start()
        try:
            assert not finished.wait(0.5)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (lock_key("migrations", "schema"),))
        migrating.join(WAIT)
    assert finished.is_set()


async def test_every_role_of_a_process_leads_on_one_session(settings: Settings) -> None:
    """Relay, projection runners and executor maintenance: one backend for all locks."""
    expected = 3  # the projector's (one runner keeps every read model), the relay's and
    # the maintenance's

    async def locks_on_one_session() -> bool:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url or "", autocommit=True
        ) as conn:
            cur = await conn.execute(
                "SELECT a.pid, count(l.pid) FROM pg_stat_activity a"
                " LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory'"
                " WHERE a.datname = current_database() AND a.application_name = %s"
                " GROUP BY a.pid",
                (LOCKS_APPLICATION,),
            )
            rows = await cur.fetchall()
        return len(rows) == 1 and rows[0][1] == expected

    async with running_app(run_settings(settings), roles=ALL_ROLES):
        await until(locks_on_one_session, "not every lock on one leadership session")
