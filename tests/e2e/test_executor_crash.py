"""`norn executor` processes that die or stop in the middle of a run: a SIGKILLed
executor's run is recovered by another executor per policy (queued again while
NORN_RUN_MAX_ATTEMPTS allows, else crashed), and a SIGTERMed one hands its run back
without spending an attempt. Nothing stays running forever."""

from __future__ import annotations

import signal
from typing import Any

import psycopg
import pytest

from infrastructure.settings import Settings
from tests.e2e.executor_processes import executor_process, running_on
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    EXECUTOR_ONLY,
    NO_EXECUTOR,
    event_names,
    get_run,
    make_pipeline,
    poll,
    run_events,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)
from tests.support.plugins import marks


async def slow_pipeline(client: Any, editor: dict[str, str]) -> str:
    """extract -> nap (an hour on the first execution in a run, at once after) -> load."""
    return await make_pipeline(
        client,
        editor,
        "nightly",
        step("extract", "Test.emit", config={"count": 2}),
        step("nap", "Test.sleep", "extract", config={"seconds": 3600, "once": True}),
        step("load", "Test.mark", "nap"),
    )


@pytest.mark.parametrize("max_attempts", [2, 1])
async def test_a_killed_executors_run_is_recovered_per_policy(
    settings: Settings, max_attempts: int
) -> None:
    settings = run_settings(settings, run_max_attempts=max_attempts)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await slow_pipeline(client, editor)
        with executor_process(settings) as process:
            queued = await trigger(client, editor, pipeline_id)
            run_id = queued["run_id"]
            lost = await running_on(client, editor, run_id, process)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

        async with running_app(settings, roles=EXECUTOR_ONLY):
            run = await wait_run(client, editor, run_id)
        events = run_events(settings.database_url or "", run_id)
        reason = f"executor {lost['executor_id']} stopped heart-beating"
        if max_attempts > 1:
            assert run["status"] == "succeeded", run
            assert run["attempt"] == 2 and run["executor_id"] != lost["executor_id"]
            assert [e["reason"] for n, e in events if n == "RunRequeued"] == [reason]
            assert marks(settings.files_dir, tenant_id) == [(run_id, "load")]
        else:
            assert run["status"] == "crashed", run
            assert run["error"] == f"{reason}; gave up after 1 attempt(s)"
            statuses = {name: s["status"] for name, s in steps_of(run).items()}
            assert statuses == {"extract": "succeeded", "nap": "cancelled", "load": "skipped"}
            assert "RunRequeued" not in [n for n, _ in events]
            assert marks(settings.files_dir, tenant_id) == []
        assert [n for n, _ in events].count("RunStarted") == max_attempts
        with psycopg.connect(settings.database_url or "") as conn:
            beats = conn.execute("SELECT count(*) FROM run_heartbeats").fetchone()
        assert beats == (0,)  # the dead executor's beat went with its attempt
        running = await client.get("/api/v1/runs/running", headers=editor)
        assert running.json()["items"] == []


async def test_a_stopped_executor_hands_its_run_back_without_spending_an_attempt(
    settings: Settings,
) -> None:
    # Two attempts are allowed. The first executor stops gracefully (SIGTERM): the run
    # is released, not lost. The second is killed: the run is lost once, so it is still
    # queued again rather than crashed, and a third executor finishes it.
    settings = run_settings(settings, run_max_attempts=2)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "nightly",
            step("nap", "Test.sleep", config={"seconds": 3600}),
            step("done", "Test.emit", "nap", config={"count": 1}),
        )
        with executor_process(settings) as first:
            run_id = (await trigger(client, editor, pipeline_id))["run_id"]
            stopped = await running_on(client, editor, run_id, first)
            with executor_process(settings) as second:
                first.send_signal(signal.SIGTERM)
                assert first.wait(timeout=20) == 0
                killed = await running_on(client, editor, run_id, second)
                second.send_signal(signal.SIGKILL)
                second.wait(timeout=10)

        requeued = [
            e for n, e in run_events(settings.database_url or "", run_id) if n == "RunRequeued"
        ]
        assert [(e["reason"], e["released"]) for e in requeued][:1] == [
            (f"executor {stopped['executor_id']} shut down", True)
        ]
        async with running_app(settings, roles=EXECUTOR_ONLY):

            async def recovered() -> dict[str, Any] | None:
                run = await get_run(client, editor, run_id)
                moved_on = run["status"] != "running" or run["attempt"] > 2
                return run if moved_on and steps_of(run)["nap"]["status"] != "pending" else None

            run = await poll(recovered, "the run to be recovered after the second executor")
            assert run["status"] == "running" and run["attempt"] == 3, run
            assert run["executor_id"] not in (stopped["executor_id"], killed["executor_id"])
            cancel = await client.post(f"/api/v1/runs/{run_id}/cancel", headers=editor)
            assert cancel.status_code == 202, cancel.text
            assert (await wait_run(client, editor, run_id))["status"] == "cancelled"
        names = event_names(settings.database_url or "", run_id)
        assert names.count("RunStarted") == 3 and names.count("RunRequeued") == 2
        assert "RunCrashed" not in names
