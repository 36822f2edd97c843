"""The process's one live subscription (infrastructure/live_events.py): one NATS
subscription however many listeners, each event decoded once and handed to the
listeners of its tenant and to those of every tenant (platform admins), in order;
nothing for a listener that left; an undecodable message skipped. NATS is faked: the
subscription's callback is called as nats-py would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from infrastructure import envelope, live_events
from infrastructure.envelope import CloudEvent
from infrastructure.live_events import LiveEvents


class FakeNats:
    def __init__(self) -> None:
        self.subscriptions: list[tuple[str, Any]] = []

    async def subscribe(self, subject: str, cb: Any, pending_msgs_limit: int) -> object:
        self.subscriptions.append((subject, cb))
        return object()


def _event(position: int, tenant: str | None) -> bytes:
    event = CloudEvent(
        id=str(position),
        source="/x",
        type="norn.pipeline.created.v1",
        subject="s",
        time=datetime.now(UTC),
        data={},
        position=position,
        version=1,
        tenant=tenant,
        actor="user:1",
        correlationid="c",
        causationid=None,
    )
    return envelope.encode(event)


async def _publish(nc: FakeNats, data: bytes) -> None:
    (_, deliver) = nc.subscriptions[0]
    await deliver(SimpleNamespace(data=data, subject="p.events.x"))


async def test_each_event_reaches_its_tenants_listeners_and_the_platforms_in_order(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(live_events, "TICK_SECONDS", 0.01)
    nc, hub = FakeNats(), LiveEvents("p")
    a1, a2 = await hub.listen(nc, "a"), await hub.listen(nc, "a")  # type: ignore[arg-type]
    b, everyone = await hub.listen(nc, "b"), await hub.listen(nc, None)  # type: ignore[arg-type]
    assert [subject for subject, _ in nc.subscriptions] == ["p.events.>"]

    for position, tenant in ((1, "a"), (2, "b"), (3, None), (4, "a")):
        await _publish(nc, _event(position, tenant))
    await _publish(nc, b"not an envelope")

    async def drained(listener: Any) -> list[int]:
        got = []
        while listener.pending:
            got.append((await listener.next_event(1)).position)
        return got

    assert await drained(a1) == [1, 4]
    assert await drained(a2) == [1, 4]
    assert await drained(b) == [2]
    assert await drained(everyone) == [1, 2, 3, 4]
    with pytest.raises(TimeoutError):  # nothing by the listener's tick
        await a1.next_event(0.01)

    await a1.close()
    await _publish(nc, _event(5, "a"))
    assert a1.pending == 0 and await drained(a2) == [5]
    assert hub.listeners == 3


async def test_a_new_client_is_subscribed_anew() -> None:
    hub, first, second = LiveEvents("p"), FakeNats(), FakeNats()
    await hub.listen(first, "a")  # type: ignore[arg-type]
    await hub.listen(first, "a")  # type: ignore[arg-type]
    await hub.listen(second, "a")  # type: ignore[arg-type]

    assert (len(first.subscriptions), len(second.subscriptions)) == (1, 1)


async def test_a_listener_that_takes_nothing_overflows_instead_of_growing(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(live_events, "LISTENER_BUFFER", 3)
    nc, hub = FakeNats(), LiveEvents("p")
    stuck, reading = await hub.listen(nc, "a"), await hub.listen(nc, "a")  # type: ignore[arg-type]
    for position in range(1, 6):
        await _publish(nc, _event(position, "a"))
        if position < 5:
            await reading.next_event(1)

    assert stuck.overflowed and stuck.pending > 10**9  # follow resumes it
    assert not reading.overflowed and reading.pending == 1


async def test_a_waiting_listener_wakes_for_an_event_or_its_tick_and_takes_what_waits(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(live_events, "TICK_SECONDS", 0.05)
    nc, hub = FakeNats(), LiveEvents("p")
    listener = await hub.listen(nc, "a")  # type: ignore[arg-type]

    waiting = asyncio.create_task(listener.next_event(60))
    await asyncio.sleep(0)
    await _publish(nc, _event(1, "a"))
    assert (await waiting).position == 1  # woken by the event, not the tick

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await listener.next_event(60)  # the tick ends the wait, however long it asked
    assert loop.time() - started < 1

    for position in (2, 3, 4):
        await _publish(nc, _event(position, "a"))
    assert [e.position for e in listener.ready(2)] == [2, 3]
    assert [e.position for e in listener.ready(10)] == [4]
    assert listener.ready(10) == [] and listener.pending == 0

    await listener.close()
    assert hub.listeners == 0
