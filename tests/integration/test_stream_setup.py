"""The JetStream streams a Norn process makes sure of (infrastructure/nats.py,
infrastructure/work_queue.py), against a real server."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import nats
import pytest

from infrastructure.nats import ensure_stream
from infrastructure.work_queue import dead_stream, ensure_work_streams, work_stream
from tests.conftest import NatsNames


async def test_streams_made_by_roles_starting_together_are_announced_once(
    nats_url: str, nats_names: NatsNames, caplog: pytest.LogCaptureFixture
) -> None:
    # As in `norn serve`: the relay and the projector (each its own connection) make
    # sure of the streams at the same moment; both may find one missing and add it.
    clients = [await nats.connect(nats_url) for _ in range(2)]
    try:
        with caplog.at_level(logging.INFO, logger="infrastructure"):
            await asyncio.gather(
                *(
                    ensure_stream(c.jetstream(), nats_names.stream, nats_names.prefix)
                    for c in clients
                ),
                *(
                    ensure_work_streams(c.jetstream(), nats_names.stream, nats_names.prefix)
                    for c in clients
                ),
            )
        js = clients[0].jetstream()
        for name in (
            nats_names.stream,
            work_stream(nats_names.stream),
            dead_stream(nats_names.stream),
        ):
            assert (await js.stream_info(name)).config.name == name
    finally:
        for c in clients:
            await c.close()
    announced = Counter(
        r.args[0] for r in caplog.records if r.msg == "created JetStream stream %s for %s"
    )
    assert announced == {
        nats_names.stream: 1,
        work_stream(nats_names.stream): 1,
        dead_stream(nats_names.stream): 1,
    }
