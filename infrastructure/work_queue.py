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
  max_concurrent_runs, or suspended, is nak'ed with a growing delay: it stays queued.
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
MAX_DELIVER = -1
"""Unbounded: an item stays deliverable until its run is claimed or no longer queued (a
run waiting on its quota comes round every 15 s at most). The maintenance sweep
re-dispatches only runs whose item is missing, so a bound would strand the run of an
item that ran out of deliveries."""
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

    async def has_item(self, tenant_id: str, run_id: str) -> bool:
        """Whether the run's work item is in the work stream (waiting, or being
        handled and not yet acked)."""
        try:
            await self.js.get_last_msg(
                work_stream(self.events_stream), work_subject(self.prefix, tenant_id, run_id)
            )
        except NotFoundError:
            return False
        return True

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
                item, attempt = claimed
                status = await self._executor.execute(UUID(item.run_id), attempt)
                log.info("run %s attempt %d: %s", item.run_id, attempt, status)
                ended = item.tenant_id
        except Exception:
            log.exception("work item %s: the executor failed", msg.subject)
        finally:
            self._slots.release()
        if ended is not None:
            await self._wake_waiting(ended)

    async def _claim(self, msg: Msg) -> tuple[WorkItem, int] | None:
        """The item and the attempt claimed for its run, or None (acked, nak'ed or
        dead)."""
        try:
            item = msgspec.json.decode(msg.data, type=WorkItem)
            run_id = UUID(item.run_id)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            await self._streams.dead_letter(msg, "undecodable work item")
            return None
        waiting = self._waiting.setdefault(item.tenant_id, {})
        waiting.pop(item.run_id, None)
        try:
            attempt = await asyncio.to_thread(self._executor.claim, run_id)
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
        return None if attempt is None else (item, attempt)

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
