"""Executor workers: competing pull subscribers of the work stream's durable consumer
(infrastructure/work_queue.py), up to `concurrency` runs at a time per process. A worker
claims the item's run through the aggregate (application/executor.py), acks, and executes
it. A run whose tenant is at max_concurrent_runs, or suspended, is nak'ed with a growing
delay: it stays queued, and is handed back at once when one of that tenant's runs ends
here. A cancel request published on NATS reaches the run's execution at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from application.errors import QuotaExceeded
from application.executor import Claim, RunExecutor, TenantSuspended
from application.threads import in_thread
from infrastructure.envelope import decode as decode_event
from infrastructure.logs import run_context
from infrastructure.work_queue import MAX_DELIVER, WorkItem, WorkStreams, work_stream

log = logging.getLogger(__name__)


class Workers:
    """Fetches work items and executes their runs, `concurrency` at a time."""

    def __init__(
        self,
        nc: Client,
        streams: WorkStreams,
        executor: RunExecutor,
        concurrency: int,
        on_run_ended: Callable[[str, float], None] | None = None,
    ) -> None:
        """`on_run_ended(status, seconds)`: told of every run attempt executed here."""
        self._on_run_ended = on_run_ended
        self._nc = nc
        self._streams = streams
        self._executor = executor
        self._prefix = streams.prefix
        self._slots = asyncio.Semaphore(concurrency)
        self._executions: set[asyncio.Task[Any]] = set()
        self._waiting: dict[str, dict[str, None]] = {}
        """Per tenant, runs this process found at max_concurrent_runs, oldest first."""

    async def run(self, stop: asyncio.Event) -> None:
        durable = f"{self._prefix}_executors"
        subscription = await self._streams.js.pull_subscribe(
            f"{self._prefix}.work.runs.>",
            durable=durable,
            stream=work_stream(self._streams.events_stream),
            config=ConsumerConfig(
                durable_name=durable,
                description="Norn executors (competing consumers)",
                ack_policy=AckPolicy.EXPLICIT,
                # Acked right after the claim, so it only covers fetch -> claim.
                ack_wait=30,
                max_deliver=MAX_DELIVER,
                filter_subject=f"{self._prefix}.work.runs.>",
            ),
        )
        listener = await self._nc.subscribe(
            f"{self._prefix}.events.*.run.cancel_requested", cb=self._on_cancel
        )
        try:
            while not stop.is_set():
                # Fetch as many items as there are free slots (at least one: wait for it).
                await self._slots.acquire()
                free = 1
                while not self._slots.locked():
                    await self._slots.acquire()
                    free += 1
                try:
                    messages = await subscription.fetch(free, timeout=1.0)
                except TimeoutError:
                    messages = []
                except BaseException:
                    for _ in range(free):
                        self._slots.release()
                    raise
                if stop.is_set():
                    # Fetched as this process began to stop: hand the items straight
                    # back for another executor rather than claim runs only to release
                    # them (or leave them to wait out the ack wait).
                    for msg in messages:
                        await _nak(msg, 0)
                    for _ in range(free):
                        self._slots.release()
                    break
                for _ in range(free - len(messages)):
                    self._slots.release()
                for msg in messages:
                    # Claims run side by side, each in its slot's task.
                    task = asyncio.create_task(self._work(msg), name=f"work {msg.subject}")
                    self._executions.add(task)
                    task.add_done_callback(self._executions.discard)
        finally:
            with contextlib.suppress(Exception):
                await listener.unsubscribe()

    @property
    def slots_in_use(self) -> int:
        return len(self._executions)

    @property
    def executions(self) -> list[asyncio.Task[Any]]:
        """The tasks executing runs here now."""
        return list(self._executions)

    async def drain(self) -> None:
        """Wait for the runs executing here, including any whose execution began while
        waiting (cancelled by the caller when it gives up)."""
        while self._executions:
            await asyncio.gather(*self._executions, return_exceptions=True)

    async def _work(self, msg: Msg) -> None:
        """Claim the item's run and execute it; the slot is free again after."""
        ended: str | None = None
        try:
            claimed = await self._claim(msg)
            if claimed is not None:
                item, claim = claimed
                with run_context(item.run_id, item.tenant_id):
                    started = time.monotonic()
                    status = await self._executor.execute(claim)
                    log.info("run %s attempt %d: %s", item.run_id, claim.attempt, status)
                if self._on_run_ended is not None:
                    self._on_run_ended(str(status), time.monotonic() - started)
                ended = item.tenant_id
        except Exception:
            log.exception("work item %s: the executor failed", msg.subject)
        finally:
            self._slots.release()
        if ended is not None:
            await self._wake_waiting(ended)

    async def _claim(self, msg: Msg) -> tuple[WorkItem, Claim] | None:
        """The item and the claim of its run, or None (acked, nak'ed or dead)."""
        try:
            item = msgspec.json.decode(msg.data, type=WorkItem)
            run_id = UUID(item.run_id)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            await self._streams.dead_letter(msg, "undecodable work item")
            return None
        waiting = self._waiting.setdefault(item.tenant_id, {})
        waiting.pop(item.run_id, None)
        try:
            claim = await in_thread(self._executor.claim, run_id)
        except (QuotaExceeded, TenantSuspended) as refused:
            # At max_concurrent_runs, or suspended: the run waits queued, looked at
            # again soon after a slot frees (see _wake_waiting) or the tenant is
            # reactivated.
            if isinstance(refused, QuotaExceeded):
                waiting[item.run_id] = None
            await _nak(msg, _waiting_delay(msg))
            return None
        except Exception as error:
            log.warning("could not claim run %s (will retry): %r", run_id, error)
            await _nak(msg, 2.0)
            return None
        with contextlib.suppress(Exception):
            await msg.ack()
        return None if claim is None else (item, claim)

    async def _wake_waiting(self, tenant_id: str) -> None:
        """The run's end freed one of its tenant's max_concurrent_runs: hand the run
        this process refused for that quota longest ago back to the executors now,
        instead of when its backed-off item comes round again (up to 15 s later). Only
        a refused run: its item waits out a delay, so a fresh one (which replaces it)
        jumps no queue. If it started meanwhile, its claim just finds nothing to do."""
        waiting = self._waiting.get(tenant_id)
        if not waiting:
            return
        run_id = next(iter(waiting))
        del waiting[run_id]
        try:
            await self._streams.dispatch(WorkItem(run_id=run_id, tenant_id=tenant_id))
        except Exception as error:  # its backed-off item still comes round
            log.warning("could not wake queued run %s: %r", run_id, error)

    async def _on_cancel(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            self._executor.cancel_requested(decode_event(msg.data).subject)


def _waiting_delay(msg: Msg) -> float:
    """Back off while a run waits for a slot or its tenant's reactivation: 1 s, 2 s,
    4 s ... up to 15 s (the maintenance sweep's re-dispatch starts it over)."""
    delivered = msg.metadata.num_delivered if msg.metadata else 1
    return float(min(15.0, 2 ** min(delivered - 1, 4)))


async def _nak(msg: Msg, delay: float) -> None:
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)
