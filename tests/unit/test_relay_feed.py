"""The relay's windows handed to the projector beside it (infrastructure/relay_feed.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from infrastructure.envelope import CloudEvent
from infrastructure.relay_feed import RelayFeed


def _events(*positions: int) -> list[CloudEvent]:
    return [
        CloudEvent(
            id=str(p),
            source="/x",
            type="norn.pipeline.created.v1",
            subject="s",
            time=datetime.now(UTC),
            data={},
            position=p,
            version=1,
            tenant="t",
            actor="user:1",
            correlationid="c",
            causationid=None,
        )
        for p in positions
    ]


def _positions(window: tuple[int, list[CloudEvent]] | None) -> tuple[int, list[int]] | None:
    return None if window is None else (window[0], [e.position for e in window[1]])


async def test_holds_nothing_until_a_projector_attaches() -> None:
    feed = RelayFeed()
    feed.offer(0, _events(1, 2))
    assert await feed.take(10, 0.01, asyncio.Event()) is None
    feed.attach()
    feed.offer(2, _events(3))
    assert _positions(await feed.take(10, 0.01, asyncio.Event())) == (2, [3])


async def test_windows_that_follow_on_are_taken_as_one() -> None:
    feed = RelayFeed()
    feed.attach()
    feed.offer(0, _events(1, 2))
    feed.offer(2, _events(4, 5))
    feed.offer(3, _events(4, 5, 7))  # read again from an earlier point: overlaps
    assert _positions(await feed.take(10, 0.01, asyncio.Event())) == (0, [1, 2, 4, 5, 4, 5, 7])


async def test_a_gap_between_windows_ends_the_take() -> None:
    feed = RelayFeed()
    feed.attach()
    feed.offer(0, _events(1, 2))
    feed.offer(9, _events(10))
    assert _positions(await feed.take(10, 0.01, asyncio.Event())) == (0, [1, 2])
    assert _positions(await feed.take(10, 0.01, asyncio.Event())) == (9, [10])


async def test_a_take_stops_joining_at_its_limit() -> None:
    feed = RelayFeed()
    feed.attach()
    feed.offer(0, _events(1, 2))
    feed.offer(2, _events(3, 4))
    feed.offer(4, _events(5))
    assert _positions(await feed.take(3, 0.01, asyncio.Event())) == (0, [1, 2, 3, 4])
    assert _positions(await feed.take(3, 0.01, asyncio.Event())) == (4, [5])


async def test_a_projector_too_far_behind_is_left_to_the_store() -> None:
    feed = RelayFeed(limit=4)
    feed.attach()
    feed.offer(0, _events(1, 2))
    feed.offer(2, _events(3, 4))
    feed.offer(4, _events(5))  # past the limit: what was held is dropped
    assert feed.dropped == 4
    # The window left starts past where the projector stands: it reads the store.
    assert _positions(await feed.take(10, 0.01, asyncio.Event())) == (4, [5])


async def test_a_window_offered_while_waiting_ends_the_wait() -> None:
    feed = RelayFeed()
    feed.attach()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, feed.offer, 0, _events(1))
    started = loop.time()
    assert _positions(await feed.take(10, 5.0, asyncio.Event())) == (0, [1])
    assert loop.time() - started < 4.0


async def test_stop_ends_the_wait() -> None:
    feed = RelayFeed()
    feed.attach()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await feed.take(10, 5.0, stop) is None


async def test_detach_drops_what_is_held_and_live_follows_the_relay() -> None:
    feed = RelayFeed()
    assert not feed.live
    leading = True
    feed.source(lambda: leading)
    assert feed.live
    leading = False
    assert not feed.live
    feed.attach()
    feed.offer(0, _events(1))
    feed.detach()
    feed.attach()
    assert await feed.take(10, 0.01, asyncio.Event()) is None
