"""The NATS side of a projection runner: connecting, its durable pull consumer (read
through pull requests kept open, infrastructure/jetstream_pull.py), decoding a batch,
and acking."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from infrastructure.envelope import CloudEvent, decode
from infrastructure.jetstream_pull import ContinuousPull
from infrastructure.nats import FOLLOWING_HEADER, ensure_stream, events_subjects

log = logging.getLogger(__name__)

WINDOW_REST_SECONDS = 0.005
"""Longest wait for the rest of a relay window whose first messages have arrived. The
relay publishes a window in one go, so the rest is normally there within a millisecond;
the bound only matters if it never comes (a relay stopped mid-window)."""


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


def following(msg: Msg) -> int:
    """How many more messages of its relay window follow `msg` (FOLLOWING_HEADER; 0 on
    a window's last message and on messages from a relay that did not say)."""
    value = (msg.headers or {}).get(FOLLOWING_HEADER)
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


async def take_rest_of_window(
    reader: ContinuousPull,
    messages: list[Msg],
    limit: int,
    stop: asyncio.Event,
    wait: float = WINDOW_REST_SECONDS,
) -> None:
    """Extend `messages` (up to `limit` in all) until its last message ends its relay
    window, waiting at most `wait` seconds for the rest.

    JetStream pushes each message as it is stored, so a runner may wake to a window's
    first messages only: a create's pipeline without the usage event stored beside it.
    Applied apart, the batch with the pipeline moves the tracking row to the pipeline's
    position, and the usage event (nothing to apply in most read models) is passed in
    memory only, so the row reached the command's position only with the idle write
    (projections/positions.py), 20 ms later: 9 of 400 creates sent one at a time
    (bench/commands.py's sequential lag, p99 29 ms where p90 was 7 ms)."""
    deadline = time.monotonic() + wait
    while len(messages) < limit and following(messages[-1]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        rest = await reader.take(limit - len(messages), remaining, stop)
        if not rest:
            return
        messages.extend(rest)
