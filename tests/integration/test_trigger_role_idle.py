"""The trigger role (infrastructure/trigger_role.py) at rest: once a pass has left the
tracking row at the store's newest position, the role asks only for the newest position
until an event is newer, instead of a whole pass in a transaction (with a scan of the
pipelines with triggers) five times a second; and it still passes the next event.
Real PostgreSQL; the backend's current statement is watched in pg_stat_activity."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from application.event_store import NornEventStore
from infrastructure.notification_log import max_position
from infrastructure.trigger_role import TriggerRole
from tests.conftest import seed_tenant
from tests.integration.run_helpers import poll

APP = "trigger-role-idle-test"
MAX_POSITION = "SELECT COALESCE(MAX(notification_id), 0) FROM norn_events"


async def _read_models_at(conn: psycopg.AsyncConnection, position: int) -> None:
    """The pipelines and deployments read models say they have reached `position`."""
    await conn.execute(
        "INSERT INTO projection_tracking (name, position) VALUES ('pipelines', %s),"
        " ('deployments', %s) ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
        (position, position),
    )


async def _tracked(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("SELECT position FROM event_trigger_tracking")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _until_tracked(conn: psycopg.AsyncConnection, position: int) -> None:
    async def moved() -> bool | None:
        return True if await _tracked(conn) == position else None

    await poll(moved, f"the trigger role's tracking row at {position}")


async def _statements_seen(conn: psycopg.AsyncConnection, seconds: float) -> set[str]:
    """What the role's backend runs (or ran last) over `seconds`, sampled every 10 ms."""
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        cur = await conn.execute(
            "SELECT query FROM pg_stat_activity WHERE application_name = %s", (APP,)
        )
        seen.update(row[0] for row in await cur.fetchall())
        await asyncio.sleep(0.01)
    return seen


async def test_an_idle_trigger_role_only_asks_for_the_newest_position(
    database_url: str, event_store: NornEventStore
) -> None:
    seed_tenant(event_store, uuid.uuid4(), "acme")
    role_url = make_conninfo(database_url, application_name=APP)
    # Not called: no pipeline has triggers, so no event is handed over.
    role = TriggerRole(role_url, triggers=None, interval=0.05)  # type: ignore[arg-type]
    stop = asyncio.Event()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        head = await max_position(conn)
        await _read_models_at(conn, head)
        task = asyncio.create_task(role.run(stop))
        try:
            await _until_tracked(conn, head)
            await asyncio.sleep(0.2)  # the pass that moved the row has ended
            assert await _statements_seen(conn, 1.0) == {MAX_POSITION}

            # An event newer than the role's rest: passed as before.
            seed_tenant(event_store, uuid.uuid4(), "globex")
            newer = await max_position(conn)
            assert newer > head
            await _read_models_at(conn, newer)
            await _until_tracked(conn, newer)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
