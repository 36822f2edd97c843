"""The projector beside the leading relay takes the windows the relay reads in memory,
not back from NATS (infrastructure/relay_feed.py), against real PostgreSQL and
JetStream: it follows the relay while that leads (through the relay's NATS reconnects
too), goes back to NATS when it stops, and reads from the store whatever windows it
missed."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
from nats.js.errors import NotFoundError

from application.event_store import NornEventStore
from infrastructure.envelope import to_cloud_event
from infrastructure.notification_log import read_notifications
from infrastructure.relay_feed import RelayFeed
from projections import PipelinesProjection
from tests.integration.test_projections import head, make_runner, reaches, rows
from tests.integration.test_projections import running as runner_running
from tests.integration.test_relay import append, relay_for, stream_messages, wait_until
from tests.integration.test_relay import running as relay_running


async def consumer_exists(js: Any, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    return True


async def test_the_runner_beside_the_leading_relay_follows_it_and_not_nats(
    database_url: str,
    nats_url: str,
    nats_names: Any,
    event_store: NornEventStore,
    js: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="projections.runner")
    feed = RelayFeed()
    relay = relay_for(database_url, nats_url, nats_names, feed=feed)
    event_store.recorder.on_append = relay.wake  # type: ignore[attr-defined]
    runner = make_runner(PipelinesProjection(), database_url, nats_url, nats_names, feed=feed)
    async with relay_running(relay):
        await wait_until(lambda: relay.is_leader)
        async with runner_running(runner):
            await append(event_store, 5)
            await reaches(database_url, "pipelines", await head(database_url))
            assert len(await rows(database_url)) == 5
            # Not through NATS: the runner has no consumer there, yet the relay
            # published every event all the same.
            assert not await consumer_exists(js, nats_names.stream, runner.durable_name)
            assert len(await stream_messages(js, nats_names.stream)) == 10

            # The relay's NATS connection drops; it reconnects and resyncs, leading all
            # along: the runner stays with the feed (it went to NATS and back before).
            await relay._drop_nats()
            assert feed.live  # before the relay has reconnected and resynced
            await append(event_store, 2)
            await reaches(database_url, "pipelines", await head(database_url))
            assert len(await stream_messages(js, nats_names.stream)) == 14
            assert "stopped leading" not in caplog.text
            assert not await consumer_exists(js, nats_names.stream, runner.durable_name)

            # The relay stops (another process's leads now, without a feed): the runner
            # binds its consumer anew and follows NATS.
            await relay.close()
    other = relay_for(database_url, nats_url, nats_names)
    event_store.recorder.on_append = other.wake  # type: ignore[attr-defined]
    async with relay_running(other), runner_running(runner):
        await wait_until(lambda: other.is_leader)
        await append(event_store, 3)
        await reaches(database_url, "pipelines", await head(database_url))
        assert await consumer_exists(js, nats_names.stream, runner.durable_name)
    assert len(await rows(database_url)) == 10


@pytest.mark.parametrize("offered", ["the last create only", "nothing"])
async def test_windows_the_runner_missed_are_read_from_the_store(
    database_url: str, nats_url: str, nats_names: Any, event_store: NornEventStore, offered: str
) -> None:
    feed = RelayFeed()
    feed.source(lambda: True)  # stands in for a relay of this process that leads
    # Without a window, only the check for a stalled relay can find the events; with
    # one, the check is off: the gap before the window alone must send it to the store.
    stall = 0.5 if offered == "nothing" else None
    runner = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        feed=feed,
        relay_stall_after=stall,
    )
    async with runner_running(runner):
        await append(event_store, 3)
        if offered == "nothing":
            # Nothing comes (a relay stalled on an event it cannot publish): the runner
            # finds the store ahead and reads it.
            pass
        else:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                notes = await read_notifications(conn, 0, 100, precise=True)
            # A window that starts past what the runner has applied: the windows before
            # it were dropped (the runner fell behind).
            feed.offer(notes[-3].id, [to_cloud_event(n) for n in notes[-2:]])
        await reaches(database_url, "pipelines", await head(database_url))
    assert len(await rows(database_url)) == 3
