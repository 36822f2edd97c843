"""The metrics that cost a query or a NATS request (infrastructure/metrics.py): the
store head, projection lag, work-queue depth. The API's /metrics refreshes them before
it answers; a process without HTTP (NORN_METRICS_PORT) refreshes them every few seconds
instead. Each refresh is bounded by a timeout, so a scrape never hangs on PostgreSQL or
NATS; a value that cannot be refreshed keeps its last one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from infrastructure.metrics import NornMetrics
from infrastructure.notification_log import max_position
from infrastructure.work_queue import work_stream
from projections import ALL_PROJECTIONS, LivePositions

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 5.0
FRESH_FOR = 2.0
"""Seconds a scrape's refreshed values serve the scrapes after it."""
REFRESH_TIMEOUT = 1.0


async def projection_positions(
    pool: AsyncConnectionPool, live: LivePositions
) -> tuple[int, dict[str, int]]:
    """The store head, and each read model's position: the higher of its tracking row
    and this process's runner (which writes positions it only passed a second late)."""
    async with pool.connection() as conn:
        head = await max_position(conn)
        cur = await conn.execute("SELECT name, position FROM projection_tracking")
        tracked = {name: int(position) for name, position in await cur.fetchall()}
    return head, {p.name: max(tracked.get(p.name, 0), live.get(p.name)) for p in ALL_PROJECTIONS}


_UNFINISHED = ("queued", "running")


async def unfinished_runs(pool: AsyncConnectionPool) -> dict[str, int]:
    """Runs queued and running now (the runs_status_started index answers it); finished
    ones are counted as they finish, by norn_run_transitions_total."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, count(*) FROM runs WHERE status = ANY(%s) GROUP BY status",
            (list(_UNFINISHED),),
        )
        counted = {status: int(n) for status, n in await cur.fetchall()}
    return {status: counted.get(status, 0) for status in _UNFINISHED}


async def work_queue_depth(nc: Client, events_stream: str) -> int:
    """Items in the work stream (WorkQueue retention: an item leaves once acked)."""
    info = await nc.jetstream().stream_info(work_stream(events_stream))
    return int(info.state.messages)


class MetricsRefresher:
    def __init__(
        self,
        metrics: NornMetrics,
        read_pool: AsyncConnectionPool,
        live: LivePositions,
        nats: Callable[[], Client | None],
        events_stream: str,
    ) -> None:
        self._metrics = metrics
        self._pool = read_pool
        self._live = live
        self._nats = nats
        self._events_stream = events_stream
        self._fresh_until = 0.0
        self._refreshing = asyncio.Lock()
        metrics.refresh = self.refresh_for_scrape

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_INTERVAL):
                    await stop.wait()

    async def refresh_for_scrape(self) -> None:
        """What a GET /metrics waits for: values at most FRESH_FOR old, refreshed by one
        scrape at a time, so that scrapes (an open route, unless NORN_METRICS_TOKEN is
        set) cannot each cost a query and a NATS request."""
        async with self._refreshing:
            if time.monotonic() < self._fresh_until:
                return
            await self.refresh()
            self._fresh_until = time.monotonic() + FRESH_FOR

    async def refresh(self) -> None:
        m = self._metrics
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                head, positions = await projection_positions(self._pool, self._live)
            m.store_head.set(head)
            for name, position in positions.items():
                m.projection_lag.labels(name).set(max(0, head - position))
            async with asyncio.timeout(REFRESH_TIMEOUT):
                for status, count in (await unfinished_runs(self._pool)).items():
                    m.runs_now.labels(status).set(count)
        except Exception as error:  # an outage: the values stay as they were
            log.debug("metrics: store head not refreshed: %s", type(error).__name__)
        nc = self._nats()
        if nc is None or not nc.is_connected:
            return
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                m.work_queue_depth.set(await work_queue_depth(nc, self._events_stream))
        except Exception as error:
            log.debug("metrics: work queue depth not refreshed: %s", type(error).__name__)


def any_of(*sources: Callable[[], Any]) -> Callable[[], Any]:
    """The first source that has a value now (e.g. the API's NATS client, else the
    executor's)."""

    def first() -> Any:
        for source in sources:
            value = source()
            if value is not None:
                return value
        return None

    return first
