"""The NATS side of a projection runner: connecting, its durable pull consumer,
fetching a batch, and acking."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

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
    """One durable consumer per projection and installation. Durable names may not
    contain '.', '*' or '>'; the prefix keeps installations (and test runs) sharing a
    NATS server apart."""
    prefix = subject_prefix.replace(".", "_").replace("*", "_").replace(">", "_")
    return f"{prefix}_projection_{projection_name}"


async def bind_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    subject_prefix: str,
    durable: str,
    batch_size: int,
    ack_wait: float,
) -> tuple[JetStreamContext.PullSubscription, int]:
    """Create (if missing) and bind the durable pull consumer; return the subscription
    and the stream's last sequence read BEFORE binding. Every message up to that
    sequence was published after its event was stored, so a store catch-up started now
    covers it; a later jump past it means messages were lost."""
    await ensure_stream(js, stream, subject_prefix)
    last_seq = (await js.stream_info(stream)).state.last_seq
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
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
                ack_policy=AckPolicy.EXPLICIT,
                # Generous: a batch is acked only after its transaction commits.
                ack_wait=ack_wait,
                max_ack_pending=max(4 * batch_size, 1024),
            ),
        )
        log.info("created JetStream consumer %s on %s", durable, stream)
    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
    return subscription, last_seq


async def fetch_batch(
    subscription: JetStreamContext.PullSubscription,
    batch_size: int,
    timeout: float,  # noqa: ASYNC109 - passed on to fetch, which expires server-side too
    stop: asyncio.Event,
) -> list[Msg]:
    """Up to batch_size messages; [] after `timeout` or as soon as `stop` is set. A
    fetch abandoned on stop may leave messages un-acked: they are redelivered after
    ack_wait and skipped by position, so nothing is lost."""
    fetching = asyncio.ensure_future(subscription.fetch(batch_size, timeout=timeout))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not fetching.done():
            fetching.cancel()
            with contextlib.suppress(BaseException):
                await fetching
    if fetching.cancelled():
        return []
    try:
        return fetching.result()
    except TimeoutError:  # nats' TimeoutError and FetchTimeoutError subclass it
        return []


async def ack_all(messages: list[Msg]) -> None:
    for msg in messages:
        # A lost ack only means a redelivery, which is skipped by position.
        with contextlib.suppress(Exception):
            await msg.ack()
