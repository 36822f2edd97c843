"""The notifier's fan-out at rest (infrastructure/notifier_role.py): once its position is
the store's newest, it asks only for the newest position until an event is newer,
instead of reading its tracking row and the events below the precise horizon ten times a
second; its delivery loop, with nothing due, rests a second between looks; and it
still passes the next event. Real PostgreSQL; the role's backends are
watched in pg_stat_activity."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from api.bootstrap import build_container
from infrastructure.notification_log import max_position
from infrastructure.notifier_role import NotifierRole
from infrastructure.settings import Settings
from tests.conftest import seed_tenant
from tests.integration.run_helpers import poll

APP = "notifier-idle-test"
FAN_OUT_READS = ("notifier_tracking", "FROM norn_events WHERE")


async def _position(conn: psycopg.AsyncConnection) -> int | None:
    cur = await conn.execute("SELECT position FROM notifier_tracking")
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _until_passed(conn: psycopg.AsyncConnection, position: int) -> None:
    async def passed() -> bool | None:
        return True if await _position(conn) == position else None

    await poll(passed, f"the notifier's position at {position}")


async def test_an_idle_fan_out_only_asks_for_the_newest_position(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    container = build_container(settings, settings.database_url, settings.nats_url)
    seed_tenant(container.store, uuid.uuid4(), "acme")
    assert container.webhooks is not None and container.webhook_secrets is not None
    role = NotifierRole(
        make_conninfo(settings.database_url, application_name=APP),
        container.webhooks,
        container.webhook_secrets,
        interval=0.05,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(role.run(stop))
    try:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            await conn.set_autocommit(True)
            await _until_passed(conn, await max_position(conn))
            await asyncio.sleep(0.2)  # the pass that moved it has ended
            seen: set[tuple[str, object]] = set()  # (statement, when it started)
            deadline = asyncio.get_running_loop().time() + 2.0
            while asyncio.get_running_loop().time() < deadline:
                cur = await conn.execute(
                    "SELECT query, query_start FROM pg_stat_activity WHERE application_name = %s",
                    (APP,),
                )
                seen.update((row[0], row[1]) for row in await cur.fetchall())
                await asyncio.sleep(0.01)
            queries = {query for query, _ in seen}
            assert queries, "the notifier's backends were not found"
            assert not [q for q in queries if any(read in q for read in FAN_OUT_READS)], queries
            # The delivery loop, with nothing to deliver, rests a second between looks
            # (it used to claim every interval: about 40 times in these 2 s).
            claims = {start for query, start in seen if "UPDATE webhook_deliveries" in query}
            assert 1 <= len(claims) <= 4, len(claims)

            seed_tenant(container.store, uuid.uuid4(), "globex")  # newer than its rest
            await _until_passed(conn, await max_position(conn))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        container.close()
