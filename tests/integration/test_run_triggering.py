"""Triggering runs over HTTP: POST /pipelines/{id}/runs (and `:run`), the revision a run
pins, who may trigger, Idempotency-Key, params limits, POST /pipelines/execute with and
without wait, and the max_runs_per_day quota."""

from __future__ import annotations

from typing import Any

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, make_tenant_user, running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    NO_EXECUTOR,
    make_pipeline,
    run_events,
    run_settings,
    set_quotas,
    step,
    steps_of,
    tenant_editor,
    tenant_user,
    trigger,
    wait_run,
)


def emit(count: int) -> dict[str, Any]:
    return step("emit", "Test.emit", config={"count": count})


async def test_trigger_answers_202_with_the_queued_run_and_its_location(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", emit(2))
        response = await client.post(
            f"/api/v1/pipelines/{pipeline_id}/runs", json={"params": {"day": 1}}, headers=editor
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == {"run_id", "status", "revision", "position"}
        assert body["status"] == "queued" and body["revision"] == 1
        assert isinstance(body["position"], int) and body["position"] > 0
        assert response.headers["location"] == f"/api/v1/runs/{body['run_id']}"
        seen = await client.get(
            response.headers["location"],
            params={"min_position": body["position"]},
            headers=editor,
        )
        assert seen.status_code == 200, seen.text
        run = seen.json()
        assert run["status"] == "queued" and run["params"] == {"day": 1}
        assert run["pipeline_id"] == pipeline_id and run["trigger"]["kind"] == "user"
        assert [s["status"] for s in run["steps"]] == ["pending"]

        custom = await client.post(f"/api/v1/pipelines/{pipeline_id}:run", json={}, headers=editor)
        assert custom.status_code == 202, custom.text
        assert custom.json()["run_id"] != body["run_id"]
        assert custom.headers["location"] == f"/api/v1/runs/{custom.json()['run_id']}"


async def test_a_run_executes_the_revision_it_pins(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", emit(2))
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "p", "steps": [emit(5)]},
            headers=editor,
        )
        assert revised.status_code == 200 and revised.json()["revision"] == 2, revised.text

        old = await trigger(client, editor, pipeline_id, revision=1)
        latest = await trigger(client, editor, pipeline_id)
        assert (old["revision"], latest["revision"]) == (1, 2)
        old_run = await wait_run(client, editor, old["run_id"])
        latest_run = await wait_run(client, editor, latest["run_id"])
        assert old_run["status"] == latest_run["status"] == "succeeded"
        assert steps_of(old_run)["emit"]["records_out"] == 2
        assert steps_of(latest_run)["emit"]["records_out"] == 5

        unknown = await client.post(
            f"/api/v1/pipelines/{pipeline_id}/runs", json={"revision": 3}, headers=editor
        )
        assert_error(unknown, 422, "VALIDATION_ERROR")


async def test_who_may_trigger(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        tenant_id, editor, root = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", emit(1))
        _, other_editor = await make_tenant_user(client, root, "globex", "editor")
        viewer = await tenant_user(client, root, tenant_id, "viewer")
        operator = await tenant_user(client, root, tenant_id, "operator")

        for path in (
            f"/api/v1/pipelines/{pipeline_id}/runs",
            f"/api/v1/pipelines/{pipeline_id}:run",
        ):
            assert_error(
                await client.post(path, json={}, headers=other_editor), 404, "RESOURCE_NOT_FOUND"
            )
            assert_error(await client.post(path, json={}, headers=viewer), 403, "PERMISSION_DENIED")
        execute = {"pipeline_name": "p", "wait": False}
        assert_error(
            await client.post("/api/v1/pipelines/execute", json=execute, headers=viewer),
            403,
            "PERMISSION_DENIED",
        )
        assert_error(
            await client.post("/api/v1/pipelines/execute", json=execute, headers=other_editor),
            404,
            "RESOURCE_NOT_FOUND",
        )
        by_operator = await client.post(
            f"/api/v1/pipelines/{pipeline_id}/runs", json={}, headers=operator
        )
        assert by_operator.status_code == 202, by_operator.text
        listed = await client.get(
            "/api/v1/runs",
            params={"min_position": by_operator.json()["position"]},
            headers=editor,
        )
        assert [r["id"] for r in listed.json()["items"]] == [by_operator.json()["run_id"]]


async def test_an_idempotency_key_makes_a_retried_trigger_return_the_same_run(
    settings: Settings,
) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", emit(1))
        keyed = {**editor, "Idempotency-Key": "nightly-2024-05-01"}
        path = f"/api/v1/pipelines/{pipeline_id}/runs"
        first = await client.post(path, json={"params": {"d": 1}}, headers=keyed)
        again = await client.post(path, json={"params": {"d": 1}}, headers=keyed)
        assert first.status_code == again.status_code == 202, (first.text, again.text)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
        assert [name for name, _ in run_events(settings.database_url or "")] == ["RunQueued"]
        listed = await client.get(
            "/api/v1/runs",
            params={"pipeline_id": pipeline_id, "min_position": first.json()["position"]},
            headers=editor,
        )
        assert [r["id"] for r in listed.json()["items"]] == [first.json()["run_id"]]


async def test_params_must_be_small_json_without_nul(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", emit(1))
        path = f"/api/v1/pipelines/{pipeline_id}/runs"
        too_large = {"params": {"blob": "x" * 70_000}}
        assert_error(
            await client.post(path, json=too_large, headers=editor), 422, "VALIDATION_ERROR"
        )
        with_nul = {"params": {"name": "a\x00b"}}
        assert_error(
            await client.post(path, json=with_nul, headers=editor), 422, "VALIDATION_ERROR"
        )
        nul_key = {"params": {"a\x00": 1}}
        assert_error(await client.post(path, json=nul_key, headers=editor), 422, "VALIDATION_ERROR")
        execute = {"pipeline_id": pipeline_id, "context": {"blob": "x" * 70_000}}
        assert_error(
            await client.post("/api/v1/pipelines/execute", json=execute, headers=editor),
            422,
            "VALIDATION_ERROR",
        )
        assert run_events(settings.database_url or "") == []


async def test_execute_by_name_or_id_waiting_for_the_result_or_not(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "daily", emit(3))
        await make_pipeline(
            client, editor, "broken", step("boom", "Test.fail", config={"message": "disk full"})
        )
        execute = "/api/v1/pipelines/execute"

        by_name = await client.post(
            execute,
            json={"pipeline_name": "daily", "context": {"k": "v"}, "wait": True},
            headers=editor,
        )
        assert by_name.status_code == 200, by_name.text
        body = by_name.json()
        assert body["success"] is True and body["error"] is None
        assert body["status"] == "succeeded" and body["executed_at"] is not None
        assert body["context"]["input"] == {"k": "v"}
        assert body["context"]["steps"]["emit"]["records_out"] == 3
        run = await wait_run(client, editor, body["run_id"])
        assert run["pipeline_id"] == pipeline_id and run["params"] == {"k": "v"}

        by_id = await client.post(
            execute, json={"pipeline_id": pipeline_id, "wait": True}, headers=editor
        )
        assert by_id.status_code == 200 and by_id.json()["success"] is True, by_id.text
        assert by_id.json()["run_id"] not in (body["run_id"],)

        failing = await client.post(
            execute, json={"pipeline_name": "broken", "wait": True}, headers=editor
        )
        assert failing.status_code == 200, failing.text
        assert failing.json()["success"] is False and failing.json()["status"] == "failed"
        assert "disk full" in failing.json()["error"]
        assert failing.json()["context"]["steps"]["boom"]["status"] == "failed"

        queued = await client.post(execute, json={"pipeline_name": "daily"}, headers=editor)
        assert queued.status_code == 202, queued.text
        assert queued.json()["success"] is None and queued.json()["status"] in ("queued", "running")
        assert (await wait_run(client, editor, queued.json()["run_id"]))["status"] == "succeeded"

        unknown = await client.post(execute, json={"pipeline_name": "nope"}, headers=editor)
        assert_error(unknown, 404, "RESOURCE_NOT_FOUND")
        both = {"pipeline_name": "daily", "pipeline_id": pipeline_id}
        assert_error(await client.post(execute, json=both, headers=editor), 400, "VALIDATION_ERROR")


async def test_max_runs_per_day_refuses_the_run_past_the_quota(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        tenant_id, editor, root = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", emit(1))
        await set_quotas(client, root, tenant_id, max_runs_per_day=2)
        for _ in range(2):
            await trigger(client, editor, pipeline_id)
        refused = await client.post(
            f"/api/v1/pipelines/{pipeline_id}/runs", json={}, headers=editor
        )
        error = assert_error(refused, 409, "QUOTA_EXCEEDED")
        assert error["details"] == [
            {"field": "max_runs_per_day", "message": "2 of 2 in use", "limit": 2, "used": 2}
        ]
        by_name = await client.post(
            "/api/v1/pipelines/execute", json={"pipeline_name": "p"}, headers=editor
        )
        assert_error(by_name, 409, "QUOTA_EXCEEDED")
        assert [n for n, _ in run_events(settings.database_url or "")] == ["RunQueued"] * 2
