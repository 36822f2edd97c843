"""Cancelling and retrying runs through the whole app: a cancel reaching the executor over
NATS, and retries (plain, and from the failed step reusing the workspace outputs of the
steps before it) over HTTP. The logic (what a cancel does in each state, what a retry
pins and reuses) is tested on the in-memory store:
tests/unit/test_run_cancel_retry_service.py."""

from __future__ import annotations

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)


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
            409,
            "RESOURCE_CONFLICT",
        )

        # From the failed step: the step before it is taken over from the first run's
        # workspace instead of running again.
        resumed = await client.post(
            f"/api/v1/runs/{failed['run_id']}/retry",
            json={"from_failed_step": True},
            headers=editor,
        )
        assert resumed.status_code == 202, resumed.text
        third = await wait_run(client, editor, resumed.json()["run_id"])
        assert third["status"] == "succeeded" and third["resume_from"] == "g", third
        assert {s["name"]: s["reused"] for s in third["steps"]} == {"e": True, "g": False}


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
        assert cancel.json()["status"] == "running" and cancel.json()["cancel_requested"]
        run = await wait_run(client, editor, run_id)
        assert run["status"] == "cancelled" and steps_of(run)["nap"]["status"] == "cancelled"
        me = (await client.get("/api/v1/auth/me", headers=editor)).json()
        assert run["error"] == f"cancelled by user:{me['id']}"
        again = await client.post(f"/api/v1/runs/{run_id}:cancel", headers=editor)
        assert_error(again, 409, "RESOURCE_CONFLICT")

        # One retry at a time: a second click while the (hour-long) retry goes on is
        # refused, naming it; once it has ended, the run may be retried again.
        retry = await client.post(f"/api/v1/runs/{run_id}/retry", json={}, headers=editor)
        assert retry.status_code == 202, retry.text
        retry_id = retry.json()["run_id"]
        twice = await client.post(f"/api/v1/runs/{run_id}/retry", json={}, headers=editor)
        assert_error(twice, 409, "RESOURCE_CONFLICT")
        assert f"retried already, as run {retry_id}" in twice.json()["error"]["message"]
        first = await wait_run(client, editor, run_id, {"cancelled"})
        assert first["retried_by"] in (None, retry_id)  # the read model follows
        stop = await client.post(f"/api/v1/runs/{retry_id}/cancel", headers=editor)
        assert stop.status_code == 202, stop.text
        await wait_run(client, editor, retry_id)
        later = await client.post(f"/api/v1/runs/{run_id}/retry", json={}, headers=editor)
        assert later.status_code == 202, later.text
        stop = await client.post(f"/api/v1/runs/{later.json()['run_id']}/cancel", headers=editor)
        assert stop.status_code == 202, stop.text
        shown = await client.get(
            f"/api/v1/runs/{run_id}",
            params={"min_position": later.json()["position"]},
            headers=editor,
        )
        assert shown.json()["retried_by"] == later.json()["run_id"]
