"""A runner's start: it polls the store until its first NATS connection is up, and
follows NATS as soon as it is, even when the connection comes up in the middle of a
store catch-up (it then waited a whole poll interval, 0.5 s after every start of every
process, before the first event reached a read model)."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client

from application.pipelines import PipelineService
from projections import PipelinesProjection
from tests.conftest import NatsNames
from tests.integration.projection_support import (
    passes,
    publisher_fixture,  # noqa: F401 - the `publisher` fixture
    service_fixture,  # noqa: F401 - the `service` fixture
)
from tests.integration.test_projections import (
    ALICE,
    CTX,
    Publisher,
    definition,
    make_runner,
    running,
)


async def test_a_connection_made_during_the_first_catch_up_is_followed_at_once(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    service: PipelineService,
    publisher: Publisher,
) -> None:
    # A poll interval of an hour (and no position due to be written sooner): waiting one
    # out instead of following could not pass.
    runner = make_runner(
        PipelinesProjection(),
        database_url,
        nats_url,
        nats_names,
        poll_interval=3600,
        persist_interval=3600,
    )
    connect, catch_up = runner._connect_nats, runner._catch_up_now
    allowed, connected = asyncio.Event(), asyncio.Event()

    async def connect_when_allowed() -> Client:
        await allowed.wait()
        client = await connect()
        connected.set()
        return client

    async def connection_completes_during_the_first_catch_up(**options: Any) -> None:
        await catch_up(**options)
        if not allowed.is_set():
            allowed.set()
            await connected.wait()

    runner._connect_nats = connect_when_allowed  # type: ignore[method-assign]
    runner._catch_up_now = connection_completes_during_the_first_catch_up  # type: ignore[method-assign]

    async with running(runner):  # following NATS within the wait, not after an hour
        created = service.create(ALICE, definition("first"), CTX)
        assert created.position is not None
        await publisher.publish_new()
        await passes(runner, created.position)
