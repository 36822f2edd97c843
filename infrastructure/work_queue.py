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
- Workers (infrastructure/workers.py): competing pull subscribers of the work stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
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
