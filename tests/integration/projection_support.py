"""What the projection bookkeeping and projector-session tests share: a tenant to create
pipelines in, a stand-in for the relay, events for other read models, and waits on a
runner's in-memory position and on the tracking row."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import nats
import pytest
from nats.aio.client import Client
from psycopg import AsyncConnection

from application.event_store import NornEventStore
from application.pipelines import PipelineService
from infrastructure.nats import ensure_stream
from infrastructure.plugins.catalog import PluginCatalog
from projections import ProjectionRunner, wait_for_position
from projections.usage import ReadModelUsage
from tests.conftest import NatsNames, seed_tenant
from tests.integration.test_projections import T1, WAIT, Publisher


def pipeline_service(event_store: NornEventStore, usage: ReadModelUsage) -> PipelineService:
    """Pipeline commands in tenant T1."""
    seed_tenant(event_store, UUID(T1), "t1")
    return PipelineService(event_store, PluginCatalog(), usage)


@pytest.fixture(name="service")
def service_fixture(event_store: NornEventStore, usage: ReadModelUsage) -> PipelineService:
    """`service`, for the modules that import this: pipeline commands in tenant T1."""
    return pipeline_service(event_store, usage)


@pytest.fixture(name="publisher")
async def publisher_fixture(
    nats_url: str, nats_names: NatsNames, database_url: str
) -> AsyncIterator[Publisher]:
    """`publisher`, for the modules that import this: the relay's stand-in."""
    async with relay_stand_in(nats_url, nats_names, database_url) as stand_in:
        yield stand_in


@contextlib.asynccontextmanager
async def relay_stand_in(
    nats_url: str, nats_names: NatsNames, database_url: str
) -> AsyncIterator[Publisher]:
    """Publishes the store's events to the test's stream, as the relay would."""
    client: Client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await ensure_stream(js, nats_names.stream, nats_names.prefix)
        yield Publisher(js, nats_names, database_url)
    finally:
        await client.close()


def other_events(event_store: NornEventStore, count: int) -> None:
    """Events the pipelines projection has no handler for (tenants)."""
    for _ in range(count):
        seed_tenant(event_store, uuid4(), f"other-{uuid4().hex[:8]}")


async def tracking_row(database_url: str) -> tuple[Any, ...]:
    """The pipelines row with its system columns: an UPDATE makes a new row version (a
    new xmin), and a SELECT ... FOR UPDATE marks the row (xmax), even with no change."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT xmin::text, xmax::text, position, updated_at FROM projection_tracking"
            " WHERE name = 'pipelines'"
        )
        row = await cur.fetchone()
        return tuple(row) if row else (None, None, 0, None)  # never persisted yet


async def passes(runner: ProjectionRunner, position: int) -> None:
    """Until the runner has passed `position` (in memory, whatever the row says)."""
    deadline = time.monotonic() + WAIT
    while runner.keeper.passed < position:
        assert time.monotonic() < deadline, f"the runner did not pass {position}"
        await runner.positions.moved(0.1)


async def consumed(publisher: Publisher, runner: ProjectionRunner) -> None:
    """Until the runner's consumer has nothing pending or unacked."""
    deadline = time.monotonic() + WAIT
    while True:
        info = await publisher.js.consumer_info(publisher.names.stream, runner.durable_name)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        assert time.monotonic() < deadline, "the runner did not consume its messages"
        await asyncio.sleep(0.05)


async def passes_row(database_url: str, position: int) -> None:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await wait_for_position(conn, "pipelines", position, WAIT)
