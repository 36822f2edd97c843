"""ContinuousPull (infrastructure/jetstream_pull.py) against a real JetStream: messages
come through the pull requests it keeps open, in order, beyond one batch, after a
request expired, and a deleted consumer is reported rather than waited on. And the
runner's wait for the rest of a relay window (projections/consumer.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from infrastructure.jetstream_pull import ConsumerGone, ContinuousPull
from infrastructure.nats import FOLLOWING_HEADER
from projections.consumer import take_rest_of_window
from tests.conftest import NatsNames

DURABLE = "pull_test"


@pytest.fixture
async def nc(nats_url: str, nats_names: NatsNames) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await js.add_stream(name=nats_names.stream, subjects=[f"{nats_names.prefix}.>"])
    await js.add_consumer(
        nats_names.stream,
        ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.ALL, ack_wait=30),
    )
    try:
        yield client
    finally:
        await client.close()


async def publish(nc: Client, names: NatsNames, *payloads: bytes) -> None:
    for payload in payloads:
        await nc.jetstream().publish(f"{names.prefix}.x", payload)


@contextlib.asynccontextmanager
async def reading(nc: Client, names: NatsNames, **options: Any) -> AsyncIterator[ContinuousPull]:
    """A started reader of the test's consumer, closed afterwards."""
    reader = ContinuousPull(nc, stream=names.stream, consumer=DURABLE, **options)
    await reader.start()
    try:
        yield reader
    finally:
        await reader.close()


async def waiting_requests(nc: Client, names: NatsNames, count: int) -> bool:
    """Whether the consumer comes to hold `count` open pull requests (the server takes
    a request in asynchronously)."""
    for _ in range(100):
        info = await nc.jetstream().consumer_info(names.stream, DURABLE)
        if info.num_waiting == count:
            return True
        await asyncio.sleep(0.01)
    return False


async def take_all(reader: ContinuousPull, count: int, limit: int = 256) -> list[bytes]:
    """Take until `count` messages came (each take acks what it took), or fail."""
    stop = asyncio.Event()
    got: list[bytes] = []
    for _ in range(count + 5):
        messages = await reader.take(limit, 2.0, stop)
        assert len(messages) <= limit
        got += [m.data for m in messages]
        if messages:
            await messages[-1].ack()
        if len(got) >= count:
            return got
    pytest.fail(f"only {len(got)} of {count} messages came")


async def test_messages_come_in_order_beyond_one_batch(nc: Client, nats_names: NatsNames) -> None:
    async with reading(nc, nats_names, batch=8) as reader:
        payloads = [str(i).encode() for i in range(30)]
        await publish(nc, nats_names, *payloads)
        # More than three batches' worth: the requests are topped up as messages come.
        assert await take_all(reader, 30, limit=5) == payloads
        for _ in range(100):  # the server takes in the last ack asynchronously
            info = await nc.jetstream().consumer_info(nats_names.stream, DURABLE)
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.01)
        assert info.num_ack_pending == 0  # one ack of AckPolicy.ALL per take acked them
        assert info.num_pending == 0


async def test_messages_published_while_idle_arrive_without_asking(
    nc: Client, nats_names: NatsNames
) -> None:
    async with reading(nc, nats_names, batch=16) as reader:
        stop = asyncio.Event()
        assert await reader.take(16, 0.05, stop) == []  # nothing yet: [] after the wait
        await publish(nc, nats_names, b"a", b"b")
        await nc.flush()
        # Already delivered to the reader by its open request, before any take asks.
        for _ in range(200):
            if await reader.take(16, 0.0, stop):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the messages did not come through the open request")


async def test_an_expired_request_is_renewed(nc: Client, nats_names: NatsNames) -> None:
    async with reading(nc, nats_names, batch=4, expires=0.3, heartbeat=0.1) as reader:
        stop = asyncio.Event()
        # Idle past several expiries: each ends its request (408) and the reader renews.
        for _ in range(4):
            assert await reader.take(4, 0.3, stop) == []
        await publish(nc, nats_names, b"late")
        assert await take_all(reader, 1) == [b"late"]


async def test_stop_ends_a_wait_at_once(nc: Client, nats_names: NatsNames) -> None:
    async with reading(nc, nats_names, batch=4) as reader:
        stop = asyncio.Event()
        waiting = asyncio.ensure_future(reader.take(4, 30.0, stop))
        await asyncio.sleep(0.05)
        stop.set()
        assert await asyncio.wait_for(waiting, 2.0) == []


async def test_a_deleted_consumer_is_reported(nc: Client, nats_names: NatsNames) -> None:
    async with reading(nc, nats_names, batch=4) as reader:
        assert await waiting_requests(nc, nats_names, 1)  # deleted under the open request
        await nc.jetstream().delete_consumer(nats_names.stream, DURABLE)
        stop = asyncio.Event()
        with pytest.raises(ConsumerGone):
            for _ in range(50):
                await reader.take(4, 0.1, stop)


async def test_a_missing_consumer_is_reported(nc: Client, nats_names: NatsNames) -> None:
    await nc.jetstream().delete_consumer(nats_names.stream, DURABLE)
    async with reading(nc, nats_names, batch=4, heartbeat=0.1) as reader:
        stop = asyncio.Event()
        # NATS 2.10 and later answer a request for a missing consumer with a 503 at once;
        # 2.9 answers nothing, and the reader asks after two silent heartbeats.
        with pytest.raises(ConsumerGone):
            for _ in range(20):
                await reader.take(4, 0.1, stop)


async def test_requests_gone_unheard_are_made_anew(nc: Client, nats_names: NatsNames) -> None:
    async with reading(nc, nats_names, batch=4, expires=30.0, heartbeat=0.1) as reader:
        assert await waiting_requests(nc, nats_names, 1)
        # As if nothing had been heard on the open request for longer than two heartbeats
        # (a NATS server that restarted has forgotten it): the reader asks again.
        reader._heard -= 60  # the clock of the last message heard, moved back
        assert await reader.take(4, 0.0, asyncio.Event()) == []
        assert await waiting_requests(nc, nats_names, 2)


async def publish_window(nc: Client, names: NatsNames, *payloads: bytes) -> None:
    """As the relay sends a window: each message says how many more of it follow."""
    for i, payload in enumerate(payloads):
        following = len(payloads) - 1 - i
        headers = {FOLLOWING_HEADER: str(following)} if following else None
        await nc.jetstream().publish(f"{names.prefix}.x", payload, headers=headers)


async def later(delay: float, publishing: Awaitable[None]) -> None:
    await asyncio.sleep(delay)
    await publishing


async def first_taken(reader: ContinuousPull, limit: int = 16) -> list[Msg]:
    messages = await reader.take(limit, 2.0, asyncio.Event())
    assert messages
    return messages


async def test_the_rest_of_a_window_is_waited_for(nc: Client, nats_names: NatsNames) -> None:
    async with reading(nc, nats_names, batch=16) as reader:
        # A window's first message, on its own: the relay's next is on its way.
        await nc.jetstream().publish(
            f"{nats_names.prefix}.x", b"a", headers={FOLLOWING_HEADER: "1"}
        )
        messages = await first_taken(reader)
        rest = asyncio.create_task(later(0.05, publish_window(nc, nats_names, b"b")))
        await take_rest_of_window(reader, messages, 16, asyncio.Event(), wait=2.0)
        await rest
        assert [m.data for m in messages] == [b"a", b"b"]


async def test_a_window_s_last_message_is_not_waited_after(
    nc: Client, nats_names: NatsNames
) -> None:
    async with reading(nc, nats_names, batch=16) as reader:
        await publish_window(nc, nats_names, b"a")
        messages = await first_taken(reader)
        rest = asyncio.create_task(later(0.05, publish_window(nc, nats_names, b"b")))
        await take_rest_of_window(reader, messages, 16, asyncio.Event(), wait=2.0)
        assert [m.data for m in messages] == [b"a"]
        await rest
        assert [m.data for m in await first_taken(reader)] == [b"b"]


async def test_a_rest_that_never_comes_is_waited_for_a_moment_only(
    nc: Client, nats_names: NatsNames
) -> None:
    async with reading(nc, nats_names, batch=16) as reader:
        await nc.jetstream().publish(
            f"{nats_names.prefix}.x", b"a", headers={FOLLOWING_HEADER: "1"}
        )
        messages = await first_taken(reader)
        await take_rest_of_window(reader, messages, 16, asyncio.Event(), wait=0.05)
        assert [m.data for m in messages] == [b"a"]


async def test_the_rest_of_a_window_is_taken_up_to_the_limit(
    nc: Client, nats_names: NatsNames
) -> None:
    async with reading(nc, nats_names, batch=16) as reader:
        await publish_window(nc, nats_names, b"a", b"b", b"c")
        messages = await first_taken(reader, limit=1)
        await take_rest_of_window(reader, messages, 2, asyncio.Event(), wait=2.0)
        assert [m.data for m in messages] == [b"a", b"b"]
        assert [m.data for m in await first_taken(reader)] == [b"c"]
