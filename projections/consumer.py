"""The NATS side of a projection runner: connecting, its durable pull consumer (read
through pull requests kept open, infrastructure/jetstream_pull.py), decoding a batch,
and acking."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from infrastructure.envelope import CloudEvent, decode
from infrastructure.jetstream_pull import ContinuousPull
from infrastructure.nats import ensure_stream, events_subjects

log = logging.getLogger(__name__)


async def connect_nats(url: str, name: str, on_reconnect: Callable[[], Awaitable[None]]) -> Client:
    """Retries forever, so run it as a task: the runner polls the store meanwhile, and
    NATS being down only delays following it."""

    async def on_error(error: Exception) -> None:
        # Every failed attempt lands here; the runner reports the outage once itself.
        log.debug("NATS connection %s: %r", name, error)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
        error_cb=on_error,
        reconnected_cb=on_reconnect,
    )


def durable_name(subject_prefix: str, projection_name: str) -> str:
    """One durable consumer per runner (a projection, or a group of them) and
    installation. Durable names may not contain '.', '*' or '>'; the prefix keeps
    installations (and test runs) sharing a NATS server apart."""
    prefix = subject_prefix.replace(".", "_").replace("*", "_").replace(">", "_")
    return f"{prefix}_projection_{projection_name}"


async def bind_consumer(
    nc: Client,
    *,
    stream: str,
    subject_prefix: str,
    durable: str,
    batch_size: int,
    ack_wait: float,
    replaces: tuple[str, ...] = (),
) -> tuple[ContinuousPull, int]:
    """Create (if missing) and bind the durable pull consumer; return its reader
    (started: its pull requests are open) and the stream's last sequence read BEFORE
    binding. Every message up to that sequence was published after its event was
    stored, so a store catch-up started now covers it; a later jump past it means
    messages were lost. `replaces`: consumers this one takes over from, deleted (if they
    exist) when it is made, not on every bind (the catch-up covers what they held)."""
    js = nc.jetstream()
    await ensure_stream(js, stream, subject_prefix)
    last_seq = (await js.stream_info(stream)).state.last_seq
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        info = None
    if info is not None and info.config.ack_policy != AckPolicy.ALL:
        # Made by an earlier Norn, which acked every message: JetStream cannot change
        # a consumer's ack policy, so it is made anew, like a missing one. Nothing is
        # lost: the store catch-up that follows every bind covers what it held.
        await js.delete_consumer(stream, durable)
        log.info("recreating JetStream consumer %s with AckPolicy.ALL", durable)
        info = None
    if info is None:
        # Deleted before this one is made: a start that dies in between tries again.
        for replaced in replaces:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, replaced)
                log.info("deleted JetStream consumer %s (replaced by %s)", replaced, durable)
        # A new consumer starts after what the catch-up covers, rather than
        # redelivering the whole stream only for it to be skipped by position.
        await js.add_consumer(
            stream,
            ConsumerConfig(
                name=durable,
                durable_name=durable,
                description="Norn projection (read model)",
                filter_subject=events_subjects(subject_prefix),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=last_seq + 1,
                # One ack per batch, for its last message, acks the batch: a runner
                # takes messages in order and acks only once everything below its
                # batch is applied or covered by a store catch-up (a gap starts one).
                # Per-message acks were 11 publishes per event, one per projection.
                ack_policy=AckPolicy.ALL,
                # Generous: a batch is acked only after its transaction commits.
                ack_wait=ack_wait,
                max_ack_pending=max(4 * batch_size, 1024),
            ),
        )
        log.info("created JetStream consumer %s on %s", durable, stream)
    reader = ContinuousPull(nc, stream=stream, consumer=durable, batch=batch_size)
    await reader.start()
    return reader, last_seq


def decode_batch(
    messages: list[Msg], last_seq: int | None, name: str
) -> tuple[list[CloudEvent], int, bool]:
    """The events of a fetched batch, in position order; the highest stream sequence in
    it; and whether something is missing (a jump in the stream sequence after
    `last_seq`, or an undecodable message) that a catch-up from the store must fill."""
    expected = None if last_seq is None else last_seq + 1
    highest = last_seq or 0
    gap = False
    events: list[CloudEvent] = []
    for msg in messages:
        seq = msg.metadata.sequence.stream
        if expected is not None and seq > expected:
            # Lost, deleted or expired messages: the store has them.
            log.warning(
                "projection %s: stream sequence jumped from %d to %d; catching up from the store",
                name,
                expected - 1,
                seq,
            )
            gap = True
        expected = max(expected or 0, seq + 1)
        highest = max(highest, seq)
        try:
            events.append(decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error(
                "projection %s: undecodable message at stream sequence %d; "
                "reading the store instead",
                name,
                seq,
            )
            gap = True
    # Position order, so the "skip at or below the position" rule never drops an event
    # that a re-publish delivered out of order.
    events.sort(key=lambda e: e.position)
    return events, highest, gap


async def ack_through(messages: list[Msg]) -> None:
    """Ack `messages` and every earlier one (AckPolicy.ALL): one ack, for the message
    with the highest stream sequence. Call it only once every earlier message is applied
    or covered by a store catch-up."""
    if not messages:
        return
    last = max(messages, key=lambda msg: msg.metadata.sequence.stream)
    # A lost ack only means a redelivery, which is skipped by position.
    with contextlib.suppress(Exception):
        await last.ack()
