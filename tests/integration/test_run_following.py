"""Following runs over HTTP: GET /runs/{id}/status (progress, current step, estimate),
/runs/{id}/logs (per step, bounded), /runs/running, /runs/recent and the list filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from infrastructure.run_logs import MAX_LINES
from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    get_run,
    make_pipeline,
    poll,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    tenant_user,
    trigger,
    wait_run,
)


async def test_status_shows_progress_the_current_step_and_an_estimate(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        quick = [
            step("extract", "Test.emit", config={"count": 2}),
            step("load", "Test.sleep", "extract", config={"seconds": 0.05}),
        ]
        pipeline_id = await make_pipeline(client, editor, "nightly", *quick)
        first = await trigger(client, editor, pipeline_id)
        status_path = f"/api/v1/runs/{first['run_id']}/status"
        queued = await client.get(
            status_path, params={"min_position": first["position"]}, headers=editor
        )
        assert queued.status_code == 200, queued.text
        assert queued.json()["status"] in ("queued", "running", "succeeded")
        await wait_run(client, editor, first["run_id"], {"succeeded"})
        done = (await client.get(status_path, headers=editor)).json()
        assert done["status"] == "succeeded" and done["progress"] == 100.0
        assert done["steps_total"] == done["steps_finished"] == 2
        assert done["current_step"] is None and done["estimated_completion"] is None
        assert done["started_at"] <= done["finished_at"]

        slow = [quick[0], step("load", "Test.sleep", "extract", config={"seconds": 600})]
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "nightly", "steps": slow},
            headers=editor,
        )
        assert revised.status_code == 200, revised.text
        second = await trigger(client, editor, pipeline_id)
        await wait_run(client, editor, second["run_id"], {"running"}, step=("load", "running"))
        running = (
            await client.get(f"/api/v1/runs/{second['run_id']}/status", headers=editor)
        ).json()
        assert running["status"] == "running" and running["current_step"] == "load"
        assert running["progress"] == 50.0 and running["steps_finished"] == 1
        assert running["started_at"] is not None and running["finished_at"] is None
        # From the first run's duration: the pipeline has a history now.
        assert running["estimated_completion"] is not None
        assert running["estimated_completion"] >= running["started_at"]

        cancelled = await client.post(f"/api/v1/runs/{second['run_id']}/cancel", headers=editor)
        assert cancelled.status_code == 202, cancelled.text
        await wait_run(client, editor, second["run_id"], {"cancelled"})
        # Ended without succeeding is done too (its unfinished steps skipped or cancelled).
        ended = (await client.get(f"/api/v1/runs/{second['run_id']}/status", headers=editor)).json()
        assert ended["status"] == "cancelled" and ended["progress"] == 100.0


async def test_logs_per_step_are_bounded(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "chatty",
            step("quiet", "Test.sleep", config={"seconds": 0.01}),
            step("loud", "Test.emit", "quiet", config={"count": 1, "log_lines": MAX_LINES + 50}),
        )
        queued = await trigger(client, editor, pipeline_id)
        assert (await wait_run(client, editor, queued["run_id"]))["status"] == "succeeded"
        path = f"/api/v1/runs/{queued['run_id']}/logs"

        quiet = (await client.get(path, params={"step": "quiet"}, headers=editor)).json()
        assert [line["message"] for line in quiet["items"]][:1] == ["sleeping 0.01s"]
        assert quiet["items"][-1]["message"].startswith("0 records in, 0 out in ")
        assert {line["step"] for line in quiet["items"]} == {"quiet"} and not quiet["truncated"]

        loud = await client.get(path, params={"step": "loud", "limit": 5000}, headers=editor)
        assert loud.status_code == 200, loud.text
        lines = loud.json()["items"]
        # One attempt keeps MAX_LINES lines and one more that says how many were dropped.
        assert len(lines) == MAX_LINES + 1 and not loud.json()["truncated"]
        assert (
            lines[0]["message"] == "line 0"
            and lines[MAX_LINES - 1]["message"] == f"line {MAX_LINES - 1}"
        )
        assert lines[-1]["level"] == "warning"
        assert lines[-1]["message"] == "51 more lines dropped"  # 50 + the runner's summary

        everything = (await client.get(path, headers=editor)).json()
        assert {line["step"] for line in everything["items"]} == {"quiet", "loud"}
        assert everything["items"][0]["step"] == "quiet"  # oldest first
        page = (await client.get(path, params={"limit": 10}, headers=editor)).json()
        assert len(page["items"]) == 10 and page["truncated"]


async def test_a_running_steps_log_lines_can_be_read_while_it_runs(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "long", step("nap", "Test.sleep", config={"seconds": 3600})
        )
        run_id = (await trigger(client, editor, pipeline_id))["run_id"]
        path = f"/api/v1/runs/{run_id}/logs"

        async def said_so() -> list[dict[str, Any]] | None:
            lines = (await client.get(path, headers=editor)).json()["items"]
            return lines or None

        lines = await poll(said_so, "the running step's first log line")
        assert [(line["step"], line["attempt"], line["message"]) for line in lines] == [
            ("nap", 1, "sleeping 3600.0s")
        ]
        run = await get_run(client, editor, run_id)
        assert run["status"] == "running" and steps_of(run)["nap"]["status"] == "running"
        await client.post(f"/api/v1/runs/{run_id}/cancel", headers=editor)
        assert (await wait_run(client, editor, run_id))["status"] == "cancelled"


async def test_running_recent_and_list_filters(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, root = await tenant_editor(client, settings, plan="pro")
        admin = await tenant_user(client, root, tenant_id, "admin")
        key = await client.post(
            "/api/v1/api-keys", json={"name": "ci", "roles": ["operator"]}, headers=admin
        )
        assert key.status_code == 201, key.text
        as_key = {"X-API-Key": key.json()["key"]}
        quick = await make_pipeline(client, editor, "quick", step("e", "Test.emit"))
        slow = await make_pipeline(
            client, editor, "slow", step("s", "Test.sleep", config={"seconds": 600})
        )
        failing = await make_pipeline(client, editor, "failing", step("f", "Test.fail"))

        first = await trigger(client, editor, quick)
        await wait_run(client, editor, first["run_id"])
        second = await trigger(client, as_key, quick)
        await wait_run(client, editor, second["run_id"])
        broken = await trigger(client, editor, failing)
        await wait_run(client, editor, broken["run_id"])
        hanging = await trigger(client, editor, slow)
        await wait_run(client, editor, hanging["run_id"], {"running"}, step=("s", "running"))

        async def ids(path: str, **params: Any) -> list[str]:
            response = await client.get(path, params=params, headers=editor)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["items"]]

        newest_first = [hanging["run_id"], broken["run_id"], second["run_id"], first["run_id"]]
        assert await ids("/api/v1/runs") == newest_first
        assert await ids("/api/v1/runs/running") == [hanging["run_id"]]
        assert await ids("/api/v1/runs/recent", limit=2) == newest_first[:2]
        assert await ids("/api/v1/runs", status="succeeded") == [second["run_id"], first["run_id"]]
        assert await ids("/api/v1/runs", status="failed") == [broken["run_id"]]
        assert await ids("/api/v1/runs", pipeline_id=quick) == [second["run_id"], first["run_id"]]
        assert await ids("/api/v1/runs", triggered_by="api_key") == [second["run_id"]]
        assert await ids("/api/v1/runs", triggered_by=key.json()["id"]) == [second["run_id"]]
        assert await ids("/api/v1/runs", triggered_by="user") == newest_first[:2] + newest_first[3:]

        queued_at = await _queued_at(client, editor, second["run_id"])
        assert await ids("/api/v1/runs", since=queued_at) == newest_first[:3]
        assert await ids("/api/v1/runs", until=queued_at) == [first["run_id"]]
        assert await ids("/api/v1/runs", since=queued_at, pipeline_id=quick) == [second["run_id"]]

        page = await client.get("/api/v1/runs", params={"limit": 3}, headers=editor)
        rest = await client.get(
            "/api/v1/runs",
            params={"limit": 3, "cursor": page.json()["next_cursor"]},
            headers=editor,
        )
        assert [r["id"] for r in page.json()["items"] + rest.json()["items"]] == newest_first
        assert rest.json()["next_cursor"] is None

        bad = await client.get("/api/v1/runs", params={"status": "exploded"}, headers=editor)
        assert bad.status_code in (400, 422), bad.text
        listed = await client.get("/api/v1/runs", headers=root)
        assert hanging["run_id"] in [r["id"] for r in listed.json()["items"]]


async def _queued_at(client: Any, headers: dict[str, str], run_id: str) -> str:
    run = (await client.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
    return datetime.fromisoformat(run["queued_at"]).isoformat()
