"""One app shared by the tests of a module, for modules whose tests need no app of their
own (tests/conftest.py has the rest).

A test on the shared app isolates itself by what it creates: its own tenant with a
unique name (api_client.unique), and only what it made in its assertions. A test that needs
settings of its own, counts or lists what the whole installation holds, or changes
state every tenant shares (login throttle of the test client's address, rate limits,
readiness, the stream) starts its own app with `running_app(settings)`. Also a JetStream
context on the test NATS server (`js`), for the relay's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import running_app


@pytest.fixture(scope="module")
async def module_app(module_settings: Settings) -> AsyncIterator[AsyncTestClient]:
    """The real app (relay and projectors running), started once for the module."""
    async with running_app(module_settings) as client:
        yield client


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()
