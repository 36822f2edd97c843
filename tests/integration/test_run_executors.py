"""Executors as competing consumers: two executors and many runs (each executed exactly
once), max_concurrent_runs across executors, a suspended tenant's runs waiting queued,
and a graceful shutdown handing a run to another executor."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import nats

from infrastructure.settings import Settings
from infrastructure.work_queue import work_stream
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    EXECUTOR_ONLY,
    FINISHED,
    NO_EXECUTOR,
    event_names,
    make_pipeline,
    poll,
    run_events,
    run_settings,
    set_quotas,
    step,
    tenant_editor,
    trigger,
    wait_run,
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


async def work_items_delivered(settings: Settings, items: int) -> None:
    """Wait until the executors have been handed each of the first `items` work items
    at least once (JetStream's count of the work consumer's deliveries)."""
    nc = await nats.connect(settings.nats_url or "")
    try:
        js = nc.jetstream()
        stream = work_stream(settings.nats_stream)

        async def probe() -> bool | None:
            try:
                info = await js.consumer_info(stream, f"{settings.subject_prefix}_executors")
            except nats.js.errors.NotFoundError:
                return None
            return True if (info.delivered.stream_seq or 0) >= items else None

        await poll(probe, f"{items} work items to be delivered")
    finally:
        await nc.close()


async def test_a_suspended_tenants_runs_wait_queued_until_it_is_reactivated(
    settings: Settings,
) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        tenant_id, editor, root = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", step("mark", "Test.mark"))
        queued = [await trigger(client, editor, pipeline_id) for _ in range(2)]
        suspended = await client.put(
            f"/api/v1/tenants/{tenant_id}", json={"status": "suspended"}, headers=root
        )
        assert suspended.status_code == 200, suspended.text

        async with running_app(settings, roles=EXECUTOR_ONLY):
            await work_items_delivered(settings, 2)
            for q in queued:
                run = await wait_run(client, editor, q["run_id"], {"queued"})
                assert run["attempt"] == 0
                assert event_names(settings.database_url or "", q["run_id"]) == ["RunQueued"]
            assert marks(settings.files_dir, tenant_id) == []

            active = await client.put(
                f"/api/v1/tenants/{tenant_id}", json={"status": "active"}, headers=root
            )
            assert active.status_code == 200, active.text
            for q in queued:
                assert (await wait_run(client, editor, q["run_id"]))["status"] == "succeeded"
        assert sorted(run for run, _ in marks(settings.files_dir, tenant_id)) == sorted(
            q["run_id"] for q in queued
        )


async def test_a_stopping_executor_hands_its_run_to_another(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client, AsyncExitStack() as stack:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "long",
            step("first", "Test.emit", config={"count": 2}),
            step("nap", "Test.sleep", "first", config={"seconds": 3600, "once": True}),
        )
        first_executor = AsyncExitStack()
        await first_executor.enter_async_context(running_app(settings, roles=EXECUTOR_ONLY))
        stack.push_async_callback(first_executor.aclose)
        queued = await trigger(client, editor, pipeline_id)
        run_id = queued["run_id"]
        started = await wait_run(client, editor, run_id, {"running"}, step=("nap", "running"))

        await stack.enter_async_context(running_app(settings, roles=EXECUTOR_ONLY))
        await first_executor.aclose()  # a graceful stop, as on SIGTERM

        run = await wait_run(client, editor, run_id)
        assert run["status"] == "succeeded", run
        assert run["attempt"] == 2 and run["executor_id"] != started["executor_id"]
        events = run_events(settings.database_url or "", run_id)
        requeued = [e for name, e in events if name == "RunRequeued"]
        assert len(requeued) == 1
        assert requeued[0]["reason"] == f"executor {started['executor_id']} shut down"
        names = [name for name, _ in events]
        assert names.count("RunStarted") == 2 and names[-1] == "RunSucceeded"
        assert "RunCrashed" not in names and "RunCancelled" not in names
