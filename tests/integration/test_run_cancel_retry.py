"""Cancelling runs (queued: at once; inside a slow step: promptly, the step marked
cancelled; finished: refused) and retrying them (a new linked run of the same revision and
params; from the failed step, reusing the outputs of the steps before it)."""

from __future__ import annotations

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    EXECUTOR_ONLY,
    NO_EXECUTOR,
    event_names,
    make_pipeline,
    run_settings,
    set_quotas,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)
from tests.support.plugins import marks


async def test_a_queued_run_is_cancelled_at_once_and_never_starts(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", step("e", "Test.emit"))
        queued = await trigger(client, editor, pipeline_id)
        cancel = await client.post(f"/api/v1/runs/{queued['run_id']}/cancel", headers=editor)
        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["status"] == "cancelled" and cancel.json()["cancel_requested"]
        run = (
            await client.get(
                f"/api/v1/runs/{queued['run_id']}",
                params={"min_position": cancel.json()["position"]},
                headers=editor,
            )
        ).json()
        assert run["status"] == "cancelled" and run["started_at"] is None
        me = (await client.get("/api/v1/auth/me", headers=editor)).json()
        assert run["error"] == f"cancelled by user:{me['id']}"
        assert [s["status"] for s in run["steps"]] == ["skipped"]
        again = await client.post(f"/api/v1/runs/{queued['run_id']}:cancel", headers=editor)
        assert_error(again, 422, "VALIDATION_ERROR")

        # An executor that comes up later gets the run's work item, and leaves it alone.
        async with running_app(settings, roles=EXECUTOR_ONLY):
            later = await trigger(client, editor, pipeline_id)
            assert (await wait_run(client, editor, later["run_id"]))["status"] == "succeeded"
        assert event_names(settings.database_url or "", queued["run_id"]) == [
            "RunQueued",
            "RunCancelled",
        ]


async def test_a_run_inside_a_slow_step_is_cancelled_promptly(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, root = await tenant_editor(client, settings)
        await set_quotas(client, root, tenant_id, max_concurrent_runs=1)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "slow",
            step("first", "Test.emit", config={"count": 2}),
            step("nap", "Test.sleep", "first", config={"seconds": 3600}),
            step("after", "Test.emit", "nap"),
        )
        queued = await trigger(client, editor, pipeline_id)
        run_id = queued["run_id"]
        await wait_run(client, editor, run_id, {"running"}, step=("nap", "running"))
        waiting = await trigger(client, editor, pipeline_id)  # behind it: the quota is 1

        cancel = await client.post(f"/api/v1/runs/{run_id}/cancel", headers=editor)
        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["status"] == "running" and cancel.json()["cancel_requested"]
        # The step would sleep an hour: the run ending at all shows the cancel reached it.
        run = await wait_run(client, editor, run_id)
        assert run["status"] == "cancelled", run
        me = (await client.get("/api/v1/auth/me", headers=editor)).json()
        assert run["error"] == f"cancelled by user:{me['id']}"  # who asked, as when queued
        statuses = {name: s["status"] for name, s in steps_of(run).items()}
        assert statuses == {"first": "succeeded", "nap": "cancelled", "after": "skipped"}
        assert steps_of(run)["nap"]["finished_at"] is not None
        names = event_names(settings.database_url or "", run_id)
        assert names[-2:] == ["RunCancelRequested", "RunCancelled"]
        assert_error(
            await client.post(f"/api/v1/runs/{run_id}/cancel", headers=editor),
            422,
            "VALIDATION_ERROR",
        )
        logs = (
            await client.get(f"/api/v1/runs/{run_id}/logs", params={"step": "nap"}, headers=editor)
        ).json()
        assert [line["message"] for line in logs["items"]] == ["sleeping 3600.0s"]

        # Its slot is free again: the run waiting behind it starts.
        await wait_run(client, editor, waiting["run_id"], {"running"}, step=("nap", "running"))
        await client.post(f"/api/v1/runs/{waiting['run_id']}/cancel", headers=editor)
        assert (await wait_run(client, editor, waiting["run_id"]))["status"] == "cancelled"


async def test_retry_queues_a_linked_run_of_the_same_revision_and_params(
    settings: Settings,
) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "gated", step("e", "Test.emit"), step("g", "Test.gate", "e")
        )
        failed = await trigger(client, editor, pipeline_id, params={"day": 7})
        first = await wait_run(client, editor, failed["run_id"])
        assert (
            first["status"] == "failed" and first["error"] == "step g failed: gate open is closed"
        )
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "gated", "steps": [step("x", "Test.fail")]},
            headers=editor,
        )
        assert revised.status_code == 200 and revised.json()["revision"] == 2, revised.text
        gate = settings.files_dir / tenant_id / "open"
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.touch()

        retried = await client.post(
            f"/api/v1/runs/{failed['run_id']}/retry", json={}, headers=editor
        )
        assert retried.status_code == 202, retried.text
        body = retried.json()
        assert body["status"] == "queued" and body["revision"] == 1
        assert body["run_id"] != failed["run_id"]
        assert retried.headers["location"] == f"/api/v1/runs/{body['run_id']}"
        second = await wait_run(client, editor, body["run_id"])
        assert second["status"] == "succeeded", second  # revision 1's steps, not Test.fail
        assert second["retry_of"] == failed["run_id"] and second["resume_from"] is None
        assert second["trigger"] == {"kind": "retry", "id": failed["run_id"]}
        assert second["params"] == {"day": 7} and second["revision"] == 1
        assert [s["name"] for s in second["steps"]] == ["e", "g"]
        assert not any(s["reused"] for s in second["steps"])

        assert_error(
            await client.post(f"/api/v1/runs/{body['run_id']}/retry", json={}, headers=editor),
            422,
            "VALIDATION_ERROR",
        )


async def test_retry_from_the_failed_step_reuses_the_steps_before_it(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "resumable",
            step("extract", "Test.emit", config={"count": 4}),
            step("clean", "Test.mark", "extract"),
            step("gate", "Test.gate", "clean"),
            step("load", "Test.mark", "gate"),
            step("audit", "Test.mark", "extract"),
        )
        failed = await trigger(client, editor, pipeline_id)
        first = await wait_run(client, editor, failed["run_id"])
        assert first["status"] == "failed"
        assert {n: s["status"] for n, s in steps_of(first).items()} == {
            "extract": "succeeded",
            "clean": "succeeded",
            "gate": "failed",
            "load": "skipped",
            "audit": "succeeded",
        }
        (settings.files_dir / tenant_id / "open").touch()

        retried = await client.post(
            f"/api/v1/runs/{failed['run_id']}/retry",
            json={"from_failed_step": True},
            headers=editor,
        )
        assert retried.status_code == 202, retried.text
        resumed_id = retried.json()["run_id"]
        resumed = await wait_run(client, editor, resumed_id)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["resume_from"] == "gate" and resumed["retry_of"] == failed["run_id"]
        steps = steps_of(resumed)
        assert {n for n, s in steps.items() if s["reused"]} == {"extract", "clean", "audit"}
        assert all(s["status"] == "succeeded" for s in steps.values())
        # Reused outputs feed the steps after them, counts included.
        assert (steps["clean"]["records_in"], steps["clean"]["records_out"]) == (4, 4)
        assert steps["gate"]["records_in"] == 4 and steps["load"]["records_out"] == 4

        # The reused steps did not run again: no marks, no starts, no logs in the new run.
        left = marks(settings.files_dir, tenant_id)
        assert sorted(left[:2]) == [(failed["run_id"], "audit"), (failed["run_id"], "clean")]
        assert left[2:] == [(resumed_id, "load")]
        assert event_names(settings.database_url or "", resumed_id).count("RunStepStarted") == 2
        logs = (await client.get(f"/api/v1/runs/{resumed_id}/logs", headers=editor)).json()
        assert {line["step"] for line in logs["items"]} == {"gate", "load"}

        # A plain retry runs every step again.
        again = await client.post(f"/api/v1/runs/{failed['run_id']}/retry", json={}, headers=editor)
        rerun = await wait_run(client, editor, again.json()["run_id"])
        assert rerun["status"] == "succeeded" and not any(s["reused"] for s in rerun["steps"])
        rerun_marks = [m for m in marks(settings.files_dir, tenant_id) if m[0] == rerun["id"]]
        assert sorted(step for _, step in rerun_marks) == ["audit", "clean", "load"]

        no_failed_step = await client.post(
            f"/api/v1/runs/{resumed_id}/retry", json={"from_failed_step": True}, headers=editor
        )
        assert_error(no_failed_step, 422, "VALIDATION_ERROR")


async def test_a_cancel_reaches_the_executor_without_waiting_for_its_heartbeat(
    settings: Settings,
) -> None:
    # The executor re-reads its runs only every 60 s here, longer than the wait below
    # allows: the run can only end in time through the cancel request published on NATS.
    settings = run_settings(settings, heartbeat_interval=60.0, heartbeat_timeout=600.0)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "slow", step("nap", "Test.sleep", config={"seconds": 3600})
        )
        run_id = (await trigger(client, editor, pipeline_id))["run_id"]
        await wait_run(client, editor, run_id, {"running"}, step=("nap", "running"))
        cancel = await client.post(f"/api/v1/runs/{run_id}/cancel", headers=editor)
        assert cancel.status_code == 202, cancel.text
        run = await wait_run(client, editor, run_id)
        assert run["status"] == "cancelled" and steps_of(run)["nap"]["status"] == "cancelled"
