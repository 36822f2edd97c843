"""kill -9 in the middle of a blue-green verification: of the executor running the
verification run, and of the executor that owns the deadlines (the maintenance leader).
Either way the release ends, `active` or `failed` per what the run did, within its
deadline plus the recovery interval of the executor that carries on; nothing stays
`verifying` (issue: "What must hold")."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infrastructure.settings import Settings
from tests.e2e.executor_processes import executor_process, running_on
from tests.integration.api_client import running_app
from tests.integration.deployment_client import BASE, Headers, deploy, status_when
from tests.integration.run_helpers import (
    EXECUTOR_ONLY,
    NO_EXECUTOR,
    get_run,
    make_pipeline,
    poll,
    run_settings,
    step,
    tenant_editor,
)

SLACK = timedelta(seconds=10)
"""What the checks allow beyond the guarantee for a loaded machine (the read model's
lag, the in-process executor's start)."""


async def _green_release(
    client: Any, editor: Headers, nap: dict[str, Any], verification_timeout: int
) -> tuple[str, dict[str, Any]]:
    """A deployment of revision 1 (direct), then revision 2 (extract -> nap -> load)
    released blue-green: (the deployment's path, the verifying release)."""
    pipeline_id = await make_pipeline(
        client, editor, "nightly", step("extract", "Test.emit", config={"count": 1})
    )
    deployment = await deploy(client, editor, pipeline_id, "production")
    revised = await client.put(
        f"/api/v1/pipelines/{pipeline_id}",
        json={
            "name": "nightly",
            "steps": [
                {"name": "extract", "plugin": "Test.emit", "config": {"count": 1}},
                {"name": "nap", "plugin": "Test.sleep", "config": nap, "depends_on": ["extract"]},
                {"name": "load", "plugin": "Test.mark", "config": {}, "depends_on": ["nap"]},
            ],
        },
        headers=editor,
    )
    assert revised.status_code == 200, revised.text
    path = f"{BASE}/{deployment['id']}"
    strategy = {"type": "blue-green", "verification_timeout": verification_timeout}
    released = await client.post(
        f"{path}/releases", json={"revision": 2, "strategy": strategy}, headers=editor
    )
    assert released.status_code == 202, released.text
    return path, released.json()["release"]


def _ended(status: dict[str, Any]) -> bool:
    latest = status["recent_releases"][0]
    return latest["release"] == 2 and latest["outcome"] != "verifying"


@pytest.mark.parametrize(("max_attempts", "outcome"), [(2, "active"), (1, "failed")])
async def test_a_killed_verification_executor_still_ends_the_release(
    settings: Settings, max_attempts: int, outcome: str
) -> None:
    """Recovered on another executor, the run succeeds (`once`: the nap is over) and green
    becomes active; with no attempt left it crashes and the release fails."""
    settings = run_settings(settings, run_max_attempts=max_attempts)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        nap = {"seconds": 3600, "once": True}
        path, release = await _green_release(client, editor, nap, verification_timeout=120)
        with executor_process(settings) as process:
            await running_on(client, editor, release["run_id"], process)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

        async with running_app(settings, roles=EXECUTOR_ONLY):
            status = await status_when(client, editor, path, _ended, seconds=60)
        latest = status["recent_releases"][0]
        assert latest["outcome"] == outcome, status
        run = await get_run(client, editor, release["run_id"])
        if outcome == "active":
            assert (status["active_release"], run["status"], run["attempt"]) == (2, "succeeded", 2)
        else:
            assert status["active_release"] == 1 and run["status"] == "crashed"
            assert "crashed" in latest["failure"]
        assert status["status"] == "active" and status["verifying"] is None
        assert datetime.now(UTC) < datetime.fromisoformat(release["deadline"])  # well within


async def test_a_killed_deadline_owner_still_fails_the_release_at_its_deadline(
    settings: Settings,
) -> None:
    """The only executor (so the maintenance leader, the deadlines' owner) runs a
    verification run that would never end and is killed. Past the deadline nothing
    settles while no executor lives; the next executor to start fails the release within
    its recovery interval and stops the run."""
    settings = run_settings(settings, run_max_attempts=2)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        # The executor starts before the release: a start of several seconds on a loaded
        # machine ate the whole verification window, and its own first maintenance pass
        # failed the release before its run began (the run was never seen running).
        with executor_process(settings) as process:
            path, release = await _green_release(
                client, editor, {"seconds": 3600}, verification_timeout=8
            )
            await running_on(client, editor, release["run_id"], process)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

        deadline = datetime.fromisoformat(release["deadline"])
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.5)
        waiting = (await client.get(f"{path}/status", headers=editor)).json()
        assert waiting["verifying"] is not None  # the deadline is in the store, not a process

        started = datetime.now(UTC)
        async with running_app(settings, roles=EXECUTOR_ONLY):
            status = await status_when(client, editor, path, _ended, seconds=30)

            async def stopped() -> dict[str, Any] | None:
                run = await get_run(client, editor, release["run_id"])
                return run if run["status"] in ("cancelled", "crashed") else None

            run = await poll(stopped, "the verification run to be stopped")
        latest = status["recent_releases"][0]
        assert latest["outcome"] == "failed" and "deadline" in latest["failure"], status
        assert (status["status"], status["active_release"]) == ("active", 1)
        recovery = timedelta(seconds=settings.heartbeat_timeout + settings.heartbeat_interval)
        assert datetime.now(UTC) - started < recovery + SLACK
        assert run["status"] == "cancelled", run
