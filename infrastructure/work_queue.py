"""Runs reach executors through a JetStream work queue (DESIGN §8).

- Streams: `<stream>_WORK` (WorkQueue retention: an item is deleted once acked) holds
  one item per queued run, on `<prefix>.work.runs.<tenant>.<run id>`, at most one per
  subject (a newer item replaces an older one, so re-dispatching never piles up);
  `<stream>_DEAD` (limits, 14 days) keeps items that could not be understood.
- Dispatcher: a durable pull consumer on the events stream filtered to run events,
  shared by every executor process (each event reaches one). For `run.queued` and
  `run.requeued` it publishes the work item (Nats-Msg-Id `run:<id>:<version>`, so a
  redelivered event is dropped by the duplicate window) and acks the event only once the
  work stream has acked the item.
- Workers: competing pull subscribers of the work stream's durable consumer, up to
  `concurrency` runs at a time per process. A worker claims the run through the
  aggregate (RunExecutor.claim), acks, and executes it. A run whose tenant is at
  max_concurrent_runs, or suspended, is nak'ed with a delay: it stays queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from application.errors import QuotaExceeded
from application.executor import RunExecutor, TenantSuspended
from infrastructure.envelope import decode as decode_event
from infrastructure.nats import DUPLICATE_WINDOW_SECONDS

log = logging.getLogger(__name__)

DISPATCHED = frozenset({"norn.run.queued.v1", "norn.run.requeued.v1"})
MAX_DELIVER = 10_000
"""Bounds redelivery of one item; a run still queued after that is re-dispatched by the
maintenance sweep with a fresh item."""
DEAD_LETTER_AGE = 14 * 86_400.0


class WorkItem(msgspec.Struct):
    run_id: str
    tenant_id: str


def work_stream(events_stream: str) -> str:
    return f"{events_stream}_WORK"


def dead_stream(events_stream: str) -> str:
    return f"{events_stream}_DEAD"


def work_subject(prefix: str, tenant_id: str, run_id: str) -> str:
    return f"{prefix}.work.runs.{tenant_id}.{run_id}"


async def ensure_work_streams(js: JetStreamContext, events_stream: str, prefix: str) -> None:
    wanted = [
        StreamConfig(
            name=work_stream(events_stream),
            subjects=[f"{prefix}.work.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_msgs_per_subject=1,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        ),
        StreamConfig(
            name=dead_stream(events_stream),
            subjects=[f"{prefix}.dead.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=DEAD_LETTER_AGE,
        ),
    ]
    for config in wanted:
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created JetStream stream %s for %s", config.name, config.subjects)


class WorkStreams:
    """Publishing to the work and dead-letter streams of one installation."""

    def __init__(self, js: JetStreamContext, events_stream: str, prefix: str) -> None:
        self.js = js
        self.events_stream = events_stream
        self.prefix = prefix

    async def ensure(self) -> None:
        await ensure_work_streams(self.js, self.events_stream, self.prefix)

    async def dispatch(self, item: WorkItem, msg_id: str | None = None) -> None:
        """Publish (or replace) the run's work item; raises unless the stream acked."""
        await self.js.publish(
            work_subject(self.prefix, item.tenant_id, item.run_id),
            msgspec.json.encode(item),
            stream=work_stream(self.events_stream),
            headers={"Nats-Msg-Id": msg_id} if msg_id else None,
        )

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Keep an item or event nobody can process, and stop its redelivery."""
        with contextlib.suppress(Exception):
            await self.js.publish(
                f"{self.prefix}.dead.{msg.subject}",
                msg.data,
                stream=dead_stream(self.events_stream),
                headers={"Norn-Reason": reason[:500]},
            )
        with contextlib.suppress(Exception):
            await msg.term()


class Dispatcher:
    """Turns run.queued / run.requeued events into work items."""

    def __init__(self, streams: WorkStreams, batch: int = 64) -> None:
        self._streams = streams
        self._prefix = streams.prefix
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        durable = f"{self._prefix}_dispatcher"
        subscription = await self._streams.js.pull_subscribe(
            f"{self._prefix}.events.*.run.*",
            durable=durable,
            stream=self._streams.events_stream,
            config=ConsumerConfig(
                durable_name=durable,
                description="Norn: run events -> executor work queue",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                filter_subject=f"{self._prefix}.events.*.run.*",
            ),
        )
        while not stop.is_set():
            try:
                messages = await subscription.fetch(self._batch, timeout=1.0)
            except TimeoutError:
                continue
            for msg in messages:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            await self._streams.dead_letter(msg, "undecodable event")
            return
        if event.type in DISPATCHED and event.tenant:
            item = WorkItem(run_id=event.subject, tenant_id=event.tenant)
            try:
                await self._streams.dispatch(item, f"run:{event.subject}:{event.version}")
            except Exception as error:
                log.warning("could not dispatch run %s (will retry): %r", event.subject, error)
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
                return
        with contextlib.suppress(Exception):
            await msg.ack()


class Workers:
    """Fetches work items and executes their runs, `concurrency` at a time."""

    def __init__(
        self, nc: Client, streams: WorkStreams, executor: RunExecutor, concurrency: int
    ) -> None:
        self._nc = nc
        self._streams = streams
        self._executor = executor
        self._prefix = streams.prefix
        self._slots = asyncio.Semaphore(concurrency)
        self._executions: set[asyncio.Task[Any]] = set()

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

    async def drain(self) -> None:
        """Wait for the runs executing here (cancelled by the caller when it gives up)."""
        if self._executions:
            await asyncio.gather(*self._executions, return_exceptions=True)

    async def _work(self, msg: Msg) -> None:
        """Claim the item's run and execute it; the slot is free again after."""
        try:
            claimed = await self._claim(msg)
            if claimed is not None:
                run_id, attempt = claimed
                status = await self._executor.execute(run_id, attempt)
                log.info("run %s attempt %d: %s", run_id, attempt, status)
        except Exception:
            log.exception("work item %s: the executor failed", msg.subject)
        finally:
            self._slots.release()

    async def _claim(self, msg: Msg) -> tuple[UUID, int] | None:
        """The run and attempt claimed for this item, or None (acked, nak'ed or dead)."""
        try:
            item = msgspec.json.decode(msg.data, type=WorkItem)
            run_id = UUID(item.run_id)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            await self._streams.dead_letter(msg, "undecodable work item")
            return None
        try:
            attempt = await asyncio.to_thread(self._executor.claim, run_id)
        except QuotaExceeded:
            await _nak(msg, _waiting_delay(msg))  # at max_concurrent_runs: wait queued
            return None
        except TenantSuspended:
            await _nak(msg, 30.0)
            return None
        except Exception as error:
            log.warning("could not claim run %s (will retry): %r", run_id, error)
            await _nak(msg, 2.0)
            return None
        with contextlib.suppress(Exception):
            await msg.ack()
        return None if attempt is None else (run_id, attempt)

    async def _on_cancel(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            self._executor.cancel_requested(decode_event(msg.data).subject)


def _waiting_delay(msg: Msg) -> float:
    """Back off while a run waits for a slot: 1 s, 2 s, 4 s ... up to 15 s."""
    delivered = msg.metadata.num_delivered if msg.metadata else 1
    return float(min(15.0, 2 ** min(delivered - 1, 4)))


async def _nak(msg: Msg, delay: float) -> None:
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)
