"""Runs reach executors through a JetStream work queue (docs/architecture.md §7).

- Streams: `<stream>_WORK` (WorkQueue retention: an item is deleted once acked) holds
  one item per queued run, on `<prefix>.work.runs.<tenant>.<run id>`, at most one per
  subject (a newer item replaces an older one, so re-dispatching never piles up);
  `<stream>_DEAD` (limits, 14 days) keeps items that could not be understood.
- The relay (infrastructure/relay.py) publishes a run's item as it publishes its
  `run.queued` or `run.requeued` event (Nats-Msg-Id `run:<id>:<version>`, so an item
  published again is dropped by the duplicate window), and goes no further until the
  work stream acked it: the item is one hop from the event store, with no consumer of
  the events stream in between.
  Earlier versions had a dispatcher consume the events stream for this: its durable
  consumer, `<prefix>_dispatcher`, is left alone (deleted while an older executor still
  ran, it would be created again and replay every run event); remove it once every
  executor runs this version.
- Workers (infrastructure/workers.py): competing pull subscribers of the work stream.
- The executors' maintenance (infrastructure/executor_role.py) re-dispatches a run
  queued for a while whose item is missing (lost with NATS, or with a relay that died
  owing it).
"""

from __future__ import annotations

import contextlib

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from infrastructure.nats import DUPLICATE_WINDOW_SECONDS, add_missing_stream

DISPATCHED = frozenset({"norn.run.queued.v1", "norn.run.requeued.v1"})
"""Event types whose run gets a work item (published by the relay with the event)."""
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
            await add_missing_stream(js, config)


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
        """Keep an item nobody can process, and stop its redelivery."""
        with contextlib.suppress(Exception):
            await self.js.publish(
                f"{self.prefix}.dead.{msg.subject}",
                msg.data,
                stream=dead_stream(self.events_stream),
                headers={"Norn-Reason": reason[:500]},
            )
        with contextlib.suppress(Exception):
            await msg.term()
