"""The executor role (`norn executor`, and part of `norn serve`): the workers and
maintenance, over one NATS connection. The relay fills their work queue
(infrastructure/work_queue.py).

Maintenance runs in one process at a time (a Postgres advisory lock held on the
process's leadership session, infrastructure/leadership.py; the others stand by): it
recovers runs whose executor stopped heart-beating, re-dispatches runs that have
waited queued for a while and whose work item is missing (lost with NATS; a run whose
item is there is left in its place in the queue), prunes old workspaces and step logs,
and settles the deployments' verifications that are due (the durable timer of
application/deployment_verification.py: a deadline passed, or a run's end not told).

Stopping hands the runs executing here back to the queue, so another executor picks
them up at once instead of after the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nats.aio.client import Client
from psycopg import AsyncConnection

from application.executor import RunExecutor
from application.recovery import RunRecovery
from application.threads import in_thread
from infrastructure.leadership import AdvisoryLocks, LeadershipLost, lock_key
from infrastructure.nats import connect, ensure_stream
from infrastructure.step_runner import PluginStepRunner
from infrastructure.supervision import Backoff, pause, retry, supervise
from infrastructure.work_queue import WorkItem, WorkStreams
from infrastructure.workers import Workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorConfig:
    database_url: str
    nats_url: str
    events_stream: str
    prefix: str
    concurrency: int = 4
    maintenance_interval: float = 5.0
    redispatch_after: float = 60.0
    workspace_retention: float = 7 * 86_400.0
    log_retention: float = 30 * 86_400.0
    drain_seconds: float = 10.0


_LOOPS_GRACE = 3.0
"""Seconds the worker and maintenance loops get to finish their last fetch on stop."""
_LOOP_BACKOFF = Backoff(first=1.0, cap=10.0)
"""Pauses before a failed worker or maintenance loop is started again."""
_CONNECT_BACKOFF = Backoff(first=1.0, cap=5.0)

_QUEUED_TOO_LONG = """
SELECT id::text, tenant_id FROM runs
 WHERE status = 'queued' AND queued_at < now() - %s
 ORDER BY queued_at LIMIT 500
"""
_OLD_LOGS = """
DELETE FROM run_logs l USING runs r
 WHERE l.run_id = r.id AND r.finished_at < now() - %s
"""


class ExecutorRole:
    def __init__(
        self,
        config: ExecutorConfig,
        executor: RunExecutor,
        recovery: RunRecovery,
        steps: PluginStepRunner,
        locks: AdvisoryLocks | None = None,
        on_run_ended: Callable[[str, float], None] | None = None,
        settle_verifications: Callable[[], Sequence[object]] | None = None,
    ) -> None:
        """`locks`: the leadership session shared with the process's other roles (closed
        by its owner); without it the role opens one of its own. `on_run_ended(status,
        seconds)`: told of every run attempt executed here (metrics).
        `settle_verifications()`: one pass of the deployments' deadline sweep (blocking,
        run in a thread each maintenance pass; returns the deployments it settled)."""
        self._on_run_ended = on_run_ended
        self._settle_verifications = settle_verifications
        self._workers: Workers | None = None
        self.nats: Client | None = None
        """The role's NATS connection while it runs (metrics: the work queue's depth)."""
        self._config = config
        self._executor = executor
        self._recovery = recovery
        self._steps = steps
        self._shared_locks = locks

    @property
    def slots_total(self) -> int:
        return self._config.concurrency

    @property
    def slots_in_use(self) -> int:
        return self._workers.slots_in_use if self._workers is not None else 0

    async def run(self, stop: asyncio.Event) -> None:
        locks = self._shared_locks or AdvisoryLocks(self._config.database_url)
        try:
            await self._run(stop, locks)
        finally:
            if self._shared_locks is None:
                await locks.close()

    async def _run(self, stop: asyncio.Event, locks: AdvisoryLocks) -> None:
        c = self._config
        nc = await retry(
            "executor: connecting to NATS",
            lambda: asyncio.wait_for(connect(c.nats_url, name="norn-executor"), 5),
            stop=stop,
            backoff=_CONNECT_BACKOFF,
            quiet=(Exception,),  # an outage, not a bug: no traceback
            logger=log,
        )
        if nc is None:
            return
        self.nats = nc
        tasks: list[asyncio.Task[Any]] = []
        workers: Workers | None = None
        try:
            js = nc.jetstream()
            streams = WorkStreams(js, c.events_stream, c.prefix)

            async def ensure_streams() -> bool:
                await ensure_stream(js, c.events_stream, c.prefix)
                await streams.ensure()
                return True

            # Retried like the connect: a refusal here ended the role for good, and runs
            # queued for nobody until a restart.
            made = await retry(
                "executor: making sure of its JetStream streams",
                ensure_streams,
                stop=stop,
                backoff=_CONNECT_BACKOFF,
                logger=log,
            )
            if made is None:
                return  # stopped first
            workers = Workers(nc, streams, self._executor, c.concurrency, self._on_run_ended)
            self._workers = workers
            tasks = [
                _supervised("executor workers", functools.partial(workers.run, stop), stop),
                _supervised(
                    "executor maintenance",
                    functools.partial(self._maintain, stop, locks, streams),
                    stop,
                ),
            ]
            await stop.wait()
            self._executor.release_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(workers.drain(), c.drain_seconds)
            # The loops end by themselves once their current fetch returns (a second at
            # most). Cancelled inside a fetch, the message it was being handed (such as
            # the work item of a run released just now) would be lost with the
            # connection, and redelivered elsewhere only after the ack wait.
            await asyncio.wait(tasks, timeout=_LOOPS_GRACE)
        finally:
            # What is still going (the grace ran out, or this role was cancelled) stops
            # with the role instead of outliving its connections and pools; a run
            # abandoned so is recovered after the heartbeat timeout.
            leftovers = [*tasks, *(workers.executions if workers else ())]
            leftovers = [task for task in leftovers if not task.done()]
            for task in leftovers:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*leftovers, return_exceptions=True)
            self.nats = self._workers = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)

    async def _maintain(
        self, stop: asyncio.Event, locks: AdvisoryLocks, streams: WorkStreams
    ) -> None:
        """Stand by for the maintenance lock, then maintain until stopped; a lost lock
        (LeadershipLost) or any error ends the term, and the supervisor starts another."""
        c = self._config
        key = lock_key("executor", c.prefix)
        async with locks.leadership(key, stop, c.maintenance_interval) as check:
            if check is None:
                return  # stopped while standing by
            log.info("executor maintenance: active")
            # Opened only while active: a standby executor holds no connection for it.
            async with await AsyncConnection.connect(c.database_url, autocommit=True) as conn:
                last_redispatch = last_prune = 0.0
                while not stop.is_set():
                    await check()
                    await self._recovery.sweep()
                    now = time.monotonic()
                    if now - last_redispatch > c.redispatch_after / 2:
                        await self._redispatch(conn, streams)
                        last_redispatch = now
                    if now - last_prune > 3600:
                        await self._prune(conn)
                        last_prune = now
                    await self._settle()
                    await pause(stop, c.maintenance_interval)

    async def _settle(self) -> None:
        # Every pass: a release ends by its deadline plus one pass, whoever held
        # maintenance before (the deadline is in the event store, not in a process).
        if self._settle_verifications is None:
            return
        settled = await in_thread(self._settle_verifications)
        if settled:
            log.info("executor maintenance: settled %d deployment verifications", len(settled))

    async def _redispatch(self, conn: AsyncConnection[Any], streams: WorkStreams) -> None:
        waited = timedelta(seconds=self._config.redispatch_after)
        lost = await redispatch_lost(conn, streams, waited)
        if lost:
            log.warning(
                "executor maintenance: re-dispatched %d queued runs with no work item", lost
            )

    async def _prune(self, conn: AsyncConnection[Any]) -> None:
        removed = await self._steps.prune(self._config.workspace_retention)
        cur = await conn.execute(_OLD_LOGS, (timedelta(seconds=self._config.log_retention),))
        log.info(
            "executor maintenance: pruned %d workspaces and %d log lines", removed, cur.rowcount
        )


async def redispatch_lost(
    conn: AsyncConnection[Any], streams: WorkStreams, waited: timedelta
) -> int:
    """Publish a work item for each run queued longer than `waited` whose item is
    missing; returns how many. A run whose item is there keeps it: a fresh item would
    replace it at the back of the queue, so under a backlog lasting longer than `waited`
    the oldest runs would be sent back behind newer ones again and again."""
    cur = await conn.execute(_QUEUED_TOO_LONG, (waited,))
    lost = 0
    for run_id, tenant_id in await cur.fetchall():
        if not await streams.has_item(tenant_id, run_id):
            await streams.dispatch(WorkItem(run_id=run_id, tenant_id=tenant_id))
            lost += 1
    return lost


def _supervised(
    name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> asyncio.Task[None]:
    """`loop` run until stop, started again after a pause when it fails (a lost
    maintenance lock is expected: no traceback)."""
    return asyncio.create_task(
        supervise(
            name, loop, stop=stop, backoff=_LOOP_BACKOFF, quiet=(LeadershipLost,), logger=log
        ),
        name=name,
    )
