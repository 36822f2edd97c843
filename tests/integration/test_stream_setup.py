"""The JetStream streams a Norn process makes sure of (infrastructure/nats.py,
infrastructure/work_queue.py), against a real server: made once by roles starting
together, and an executor refused them at its start tries again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NotFoundError

from infrastructure.nats import add_missing_stream, ensure_stream
from infrastructure.settings import Settings
from infrastructure.work_queue import dead_stream, ensure_work_streams, work_stream
from tests.conftest import NatsNames
from tests.integration.api_client import make_tenant_user, platform_admin, serving_app
from tests.integration.run_support import (
    EXECUTING,
    executing,
    finished,
    make_pipeline,
    step,
    trigger,
)


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


async def test_an_add_refused_because_another_process_made_the_stream_counts_as_made(
    nats_url: str, nats_names: NatsNames
) -> None:
    # Two adds at the same moment: JetStream may refuse one ("subjects overlap"), which
    # ended an executor for good. The refusal of an add whose stream is there is fine;
    # of one whose stream is not, it stands.
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"{nats_names.stream}_RACE"
    subjects = [f"{nats_names.prefix}.race.>"]
    try:
        await js.add_stream(StreamConfig(name=name, subjects=subjects))
        # Refused (the name is taken with another config), but the stream is there.
        await add_missing_stream(js, StreamConfig(name=name, subjects=subjects, max_msgs=7))
        with pytest.raises(APIError):  # refused (the subjects are taken), and not there
            await add_missing_stream(js, StreamConfig(name=f"{name}_2", subjects=subjects))
        with pytest.raises(NotFoundError):
            await js.stream_info(f"{name}_2")
    finally:
        await js.delete_stream(name)
        await nc.close()


async def test_an_executor_refused_its_streams_at_start_tries_again(
    settings: Settings, nats_url: str, nats_names: NatsNames
) -> None:
    # Another stream holds the work queue's subjects, so every add of the work stream is
    # refused until it goes. The executor ended for good on the first refusal, and the
    # run below was never executed.
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    squatter = f"{nats_names.stream}_SQUATTER"
    await js.add_stream(StreamConfig(name=squatter, subjects=[f"{nats_names.prefix}.work.>"]))
    try:
        async with serving_app(executing(settings), roles=EXECUTING) as http:
            admin = await platform_admin(http, settings)
            _, editor = await make_tenant_user(http, admin, "streams", "editor")
            pipeline = await make_pipeline(http, editor, "emits", [step("a", "Test.emit")])
            run_id = await trigger(http, editor, pipeline)
            await asyncio.sleep(1.0)  # refused meanwhile
            await js.delete_stream(squatter)
            assert (await finished(http, editor, run_id))["status"] == "succeeded"
    finally:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(squatter)
        await nc.close()
