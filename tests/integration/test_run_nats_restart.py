"""NATS is transport, not storage of record (a NATS server of the test's own, stopped and
started again): a run already executing finishes while NATS is down, since executors
record to the event store; a run triggered meanwhile is stored, and executes once NATS
is back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from infrastructure.embedded import EmbeddedNats
from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    event_names,
    make_pipeline,
    poll,
    run_settings,
    step,
    tenant_editor,
    trigger,
    wait_run,
)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "own-nats")
    server.start()
    yield server
    server.stop()


async def test_a_run_triggered_while_nats_is_down_runs_once_it_is_back(
    settings: Settings, own_nats: EmbeddedNats
) -> None:
    settings = run_settings(replace(settings, nats_url=f"nats://127.0.0.1:{own_nats.port}"))
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", step("e", "Test.emit"))
        before = await trigger(client, editor, pipeline_id)
        assert (await wait_run(client, editor, before["run_id"]))["status"] == "succeeded"

        slow = await make_pipeline(
            client, editor, "slow", step("nap", "Test.sleep", config={"seconds": 0.5})
        )
        executing = await trigger(client, editor, slow)
        await wait_run(client, editor, executing["run_id"], {"running"}, step=("nap", "running"))

        own_nats.stop()
        during = await trigger(client, editor, pipeline_id)  # the store takes it
        assert event_names(settings.database_url or "", during["run_id"]) == ["RunQueued"]

        async def finished_in_the_store() -> bool | None:
            names = event_names(settings.database_url or "", executing["run_id"])
            return True if names[-1] == "RunSucceeded" else None

        await poll(finished_in_the_store, "the executing run to finish while NATS is down")
        own_nats.start()

        assert (await wait_run(client, editor, executing["run_id"]))["status"] == "succeeded"

        run = await wait_run(client, editor, during["run_id"])
        assert run["status"] == "succeeded" and run["attempt"] == 1, run
        names = event_names(settings.database_url or "", during["run_id"])
        assert names.count("RunStarted") == 1 and names[-1] == "RunSucceeded"
