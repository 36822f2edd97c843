"""Executors as competing consumers over NATS: two executors and many runs (each executed
exactly once), and max_concurrent_runs across executor processes (a run waiting for a
slot is handed back to the work queue and taken up once one frees). A suspended tenant's
runs and an executor handing its run back are tested on the in-memory store
(tests/unit/test_run_quotas_service.py, test_run_recovery_service.py); a stopped executor
process in tests/e2e/test_executor_crash.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    EXECUTOR_ONLY,
    FINISHED,
    event_names,
    make_pipeline,
    poll,
    run_events,
    run_settings,
    set_quotas,
    step,
    tenant_editor,
    trigger,
)
from tests.support.plugins import marks

ENDED = {"RunSucceeded", "RunFailed", "RunCancelled", "RunTimedOut", "RunCrashed", "RunRequeued"}


async def finished_runs(client: Any, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """Every run of the tenant once `count` of them have finished."""

    async def probe() -> list[dict[str, Any]] | None:
        response = await client.get("/api/v1/runs", params={"limit": 500}, headers=headers)
        items = response.json()["items"]
        done = [r for r in items if r["status"] in FINISHED]
        return items if len(done) >= count else None

    return await poll(probe, f"{count} runs to finish", seconds=60)


def most_running_at_once(database_url: str) -> int:
    """From the store, in commit order: the most runs that were running at one time."""
    running = most = 0
    for name, _ in run_events(database_url):
        if name == "RunStarted":
            running += 1
        elif name in ENDED and name != "RunCancelled":
            running -= 1
        most = max(most, running)
    return most


async def test_two_executors_execute_every_run_exactly_once(settings: Settings) -> None:
    settings = run_settings(settings, executor_concurrency=3)
    async with (
        running_app(settings, roles=ALL_ROLES) as client,
        running_app(settings, roles=EXECUTOR_ONLY),
    ):
        tenant_id, editor, _ = await tenant_editor(client, settings, plan="enterprise")
        pipeline_id = await make_pipeline(
            client,
            editor,
            "many",
            step("mark", "Test.mark"),
            step("nap", "Test.sleep", "mark", config={"seconds": 0.05}),
        )
        queued = await asyncio.gather(*(trigger(client, editor, pipeline_id) for _ in range(40)))
        run_ids = {q["run_id"] for q in queued}
        assert len(run_ids) == 40

        runs = await finished_runs(client, editor, 40)
        assert {r["id"] for r in runs} == run_ids
        assert all(r["status"] == "succeeded" and r["attempt"] == 1 for r in runs), runs

        events = run_events(settings.database_url or "")
        starts = Counter(e["originator_id"] for name, e in events if name == "RunStarted")
        assert starts == dict.fromkeys(run_ids, 1)
        step_starts = Counter(
            (e["originator_id"], e["step"]) for name, e in events if name == "RunStepStarted"
        )
        assert set(step_starts.values()) == {1} and len(step_starts) == 80
        # The plugin's own side effect: each run's first step executed once, no more.
        assert Counter(run for run, _ in marks(settings.files_dir, tenant_id)) == dict.fromkeys(
            run_ids, 1
        )
        executors = {e["executor_id"] for name, e in events if name == "RunStarted"}
        assert len(executors) == 2, executors  # both competed for the work


async def test_max_concurrent_runs_holds_across_executors(settings: Settings) -> None:
    settings = run_settings(settings)
    async with (
        running_app(settings, roles=ALL_ROLES) as client,
        running_app(settings, roles=EXECUTOR_ONLY),
    ):
        tenant_id, editor, root = await tenant_editor(client, settings, plan="enterprise")
        await set_quotas(client, root, tenant_id, max_concurrent_runs=1)
        pipeline_id = await make_pipeline(
            client, editor, "one-at-a-time", step("nap", "Test.sleep", config={"seconds": 0.2})
        )
        queued = [await trigger(client, editor, pipeline_id) for _ in range(4)]

        most_seen = 0
        waited_queued = False

        async def probe() -> list[dict[str, Any]] | None:
            nonlocal most_seen, waited_queued
            running = (await client.get("/api/v1/runs/running", headers=editor)).json()["items"]
            listed = (await client.get("/api/v1/runs", headers=editor)).json()["items"]
            most_seen = max(most_seen, len(running))
            statuses = [r["status"] for r in listed]
            if "running" in statuses and "queued" in statuses:
                waited_queued = True
            done = len(statuses) == len(queued) and all(s in FINISHED for s in statuses)
            return listed if done else None

        runs = await poll(probe, "the four runs to finish", seconds=60)
        assert [r["status"] for r in runs] == ["succeeded"] * 4
        assert most_seen == 1 and waited_queued
        assert most_running_at_once(settings.database_url or "") == 1
        for q in queued:
            assert event_names(settings.database_url or "", q["run_id"]).count("RunStarted") == 1
