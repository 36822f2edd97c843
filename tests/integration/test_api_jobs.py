"""Scheduled jobs over HTTP against the real app and its read models (one app for the
module, each test in a tenant of its own): create, get, list and filters, update with
If-Match, enable/disable, run now, preview, history, delete, the name conflict, bad
bodies naming their fields, roles and the max_jobs quota."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, create_pipeline
from tests.integration.deployment_client import Headers, deploy, new_tenant, new_user, read_at

BASE = "/api/v1/scheduler/jobs"


async def _job(
    client: AsyncTestClient, headers: Headers, name: str, target: dict[str, Any], **body: Any
) -> dict[str, Any]:
    response = await client.post(
        BASE,
        json={
            "name": name,
            "target": target,
            "cron_expr": body.pop("cron_expr", "0 3 * * *"),
            **body,
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{BASE}/{response.json()['id']}"
    return dict(response.json())


async def test_create_get_list_update_toggle_and_delete(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    deployment = await deploy(client, editor, pipeline["id"], "production")
    nightly = await _job(
        client,
        editor,
        "nightly",
        {"deployment_id": deployment["id"]},
        timezone="Europe/Berlin",
        labels={"team": "data"},
        params={"limit": 5},
    )
    assert nightly["enabled"] is True and nightly["next_run"] is not None
    hourly = await _job(
        client,
        editor,
        "hourly",
        {"pipeline_id": pipeline["id"]},
        cron_expr="@hourly",
        enabled=False,
    )
    assert hourly["enabled"] is False and hourly["next_run"] is None

    path = f"{BASE}/{nightly['id']}"
    shown = await client.get(path, params={"min_position": hourly["position"]}, headers=editor)
    assert shown.status_code == 200, shown.text
    assert shown.headers["etag"] == '"1"'
    job = shown.json()
    assert job["target"] == {
        "deployment_id": deployment["id"],
        "pipeline_id": None,
        "revision": None,
    }
    assert (job["timezone"], job["misfire_policy"], job["overlap_policy"]) == (
        "Europe/Berlin",
        "skip",
        "skip",
    )
    assert (job["fired"], job["skipped"], job["missed"], job["last_run"]) == (0, 0, 0, None)

    listed = await read_at(client, editor, BASE, hourly["position"])
    assert [j["name"] for j in listed["items"]] == ["hourly", "nightly"]  # newest first
    enabled = await read_at(client, editor, BASE, hourly["position"], enabled="true")
    assert [j["name"] for j in enabled["items"]] == ["nightly"]
    by_target = await read_at(client, editor, BASE, hourly["position"], pipeline_id=pipeline["id"])
    assert [j["name"] for j in by_target["items"]] == ["hourly"]
    for target, names in ((pipeline["id"], ["hourly"]), (deployment["id"], ["nightly"])):
        by_either = await read_at(client, editor, BASE, hourly["position"], target=target)
        assert [j["name"] for j in by_either["items"]] == names
    by_label = await read_at(client, editor, BASE, hourly["position"], label="team=data")
    assert [j["name"] for j in by_label["items"]] == ["nightly"]

    change = {
        "name": "nightly-eu",
        "target": {"deployment_id": deployment["id"]},
        "cron_expr": "30 4 * * 1-5",
    }
    stale = await client.put(path, json=change, headers={**editor, "If-Match": '"7"'})
    assert_error(stale, 412, "VERSION_CONFLICT")
    updated = await client.put(path, json=change, headers={**editor, "If-Match": '"1"'})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["name"], updated.json()["version"]) == ("nightly-eu", 2)
    taken = await client.post(
        BASE,
        json={"name": "hourly", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"},
        headers=editor,
    )
    assert [d["field"] for d in assert_error(taken, 409, "RESOURCE_CONFLICT")["details"]] == [
        "name"
    ]

    disabled = await client.post(f"{path}/disable", headers=editor)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False, disabled.text
    enabled_again = await client.post(f"{path}/enable", headers=editor)
    assert enabled_again.json()["enabled"] is True and enabled_again.json()["next_run"]

    ran = await client.post(f"{path}/trigger", json={"params": {"limit": 1}}, headers=editor)
    assert ran.status_code == 202, ran.text
    run = await read_at(
        client, editor, f"/api/v1/runs/{ran.json()['run_id']}", ran.json()["position"]
    )
    assert run["params"] == {"limit": 1}
    assert run["trigger"] == {
        "kind": "job",
        "id": nightly["id"],
        "deployment_id": deployment["id"],
        "environment": "production",
        "release": 1,
    }
    by_job = await read_at(
        client, editor, "/api/v1/runs", ran.json()["position"], job_id=nightly["id"]
    )
    assert [r["id"] for r in by_job["items"]] == [ran.json()["run_id"]]

    history = await client.get(f"{path}/history", headers=editor)
    assert [h["event"] for h in history.json()["items"]] == [
        "created",
        "updated",
        "disabled",
        "enabled",
    ]
    assert history.json()["items"][1]["data"]["previous_name"] == "nightly"

    deleted = await client.delete(path, headers=editor)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
    gone = await client.get(
        path, params={"min_position": deleted.json()["position"]}, headers=editor
    )
    assert_error(gone, 404, "RESOURCE_NOT_FOUND")
    assert (await client.get(f"{path}/history", headers=editor)).status_code == 200
    assert_error(await client.post(f"{path}/enable", headers=editor), 404, "RESOURCE_NOT_FOUND")


async def test_preview_shows_utc_and_local_times(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    job = await _job(
        client, editor, "ny", {"pipeline_id": pipeline["id"]}, timezone="America/New_York"
    )
    preview = await client.get(f"{BASE}/{job['id']}/preview", params={"count": 3}, headers=editor)
    assert preview.status_code == 200, preview.text
    items = preview.json()["items"]
    assert len(items) == 3
    for item in items:
        assert item["utc"].endswith("Z") and item["local"][-6:] in ("-04:00", "-05:00")
        assert item["local"][11:19] == "03:00:00"
    for count in (0, 1001, "many"):
        refused = await client.get(
            f"{BASE}/{job['id']}/preview", params={"count": count}, headers=editor
        )
        assert_error(refused, 400, "VALIDATION_ERROR")


async def test_bad_bodies_name_their_fields(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    good = {"name": "x", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"}
    for change, field in (
        ({"cron_expr": "every day"}, "cron_expr"),
        ({"cron_expr": "* * * * * * *"}, "cron_expr"),
        ({"cron_expr": "0 0 30 2 *"}, "cron_expr"),  # no date is 30 February
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"misfire_policy": "sometimes"}, "misfire_policy"),
        ({"overlap_policy": "never"}, "overlap_policy"),
        ({"jitter_seconds": 3601}, "jitter_seconds"),
        ({"max_catchup": 0}, "max_catchup"),
        ({"start_at": "2027-01-01T00:00:00"}, "start_at"),
        ({"start_at": "2027-02-01T00:00:00Z", "end_at": "2027-01-01T00:00:00Z"}, "end_at"),
        # Times UTC cannot hold (before year 1, after 9999): a 422, not a 500.
        ({"start_at": "0001-01-01T00:00:00+14:00"}, "start_at"),
        ({"end_at": "9999-12-31T23:59:59-14:00"}, "end_at"),
        ({"target": {}}, "target"),
        ({"target": {"pipeline_id": "00000000-0000-4000-8000-000000000000"}}, "target.pipeline_id"),
        ({"target": {"deployment_id": pipeline["id"]}}, "target.deployment_id"),
        ({"target": {"pipeline_id": pipeline["id"], "revision": 9}}, "target.revision"),
        ({"schedule": "@daily"}, "schedule"),
    ):
        refused = await client.post(BASE, json={**good, **change}, headers=editor)
        error = assert_error(refused, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == [field], (change, error)


async def test_roles_and_the_quota(module_app: AsyncTestClient, module_settings: Settings) -> None:
    client = module_app
    tenant_id, editor, root = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    job = await _job(client, editor, "nightly", {"pipeline_id": pipeline["id"]})
    path = f"{BASE}/{job['id']}"
    viewer = await new_user(client, root, tenant_id, "viewer")
    operator = await new_user(client, root, tenant_id, "operator")
    # The read model may not hold the job yet (seen with the suite in parallel workers).
    shown = await client.get(path, params={"min_position": job["position"]}, headers=viewer)
    assert shown.status_code == 200, shown.text
    body = {"name": "y", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"}
    for headers in (viewer, operator):
        assert_error(await client.post(BASE, json=body, headers=headers), 403, "PERMISSION_DENIED")
        assert_error(await client.delete(path, headers=headers), 403, "PERMISSION_DENIED")
    assert_error(await client.post(f"{path}/disable", headers=viewer), 403, "PERMISSION_DENIED")
    assert (await client.post(f"{path}/disable", headers=operator)).status_code == 200
    ran = await client.post(f"{path}/trigger", json={}, headers=operator)
    assert ran.status_code == 202, ran.text

    quotas = await client.put(
        f"/api/v1/tenants/{tenant_id}/quotas", json={"max_jobs": 1}, headers=root
    )
    assert quotas.status_code == 200, quotas.text
    over = await client.post(BASE, json=body, headers=editor)
    assert_error(over, 409, "QUOTA_EXCEEDED")
    usage = await client.get(f"/api/v1/tenants/{tenant_id}/usage", headers=root)
    assert usage.json()["quotas"]["max_jobs"] == {"limit": 1, "used": 1}


async def test_backfill_runs_each_scheduled_time_once(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    job = await _job(
        client,
        editor,
        "hourly",
        {"pipeline_id": pipeline["id"]},
        cron_expr="0 * * * *",
        enabled=False,
    )
    path = f"{BASE}/{job['id']}/backfill"
    window = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T03:00:00Z"}
    first = await client.post(path, json=window, headers=editor)  # a disabled job too
    assert first.status_code == 202, first.text
    queued = first.json()["queued"]
    assert [q["scheduled_for"] for q in queued] == [
        f"2026-11-01T0{h}:00:00Z"
        for h in range(4)  # both ends inclusive
    ]
    assert first.json()["already_run"] == [] and first.json()["position"]
    wider = await client.post(path, json={**window, "end": "2026-11-01T04:00:00Z"}, headers=editor)
    assert [q["scheduled_for"] for q in wider.json()["queued"]] == ["2026-11-01T04:00:00Z"]
    assert [a["run_id"] for a in wider.json()["already_run"]] == [q["run_id"] for q in queued]
    run = await read_at(
        client, editor, f"/api/v1/runs/{queued[0]['run_id']}", wider.json()["position"]
    )
    assert run["trigger"] == {
        "kind": "job",
        "id": job["id"],
        "scheduled_for": "2026-11-01T00:00:00Z",
    }
    for body, status, field in (
        ({**window, "max_runs": 3}, 422, "max_runs"),
        ({"start": window["end"], "end": window["start"]}, 422, "end"),
        ({"start": "2026-11-01T00:00:00", "end": window["end"]}, 422, "start"),
        ({**window, "max_runs": 0}, 422, "max_runs"),
        ({"start": "yesterday", "end": window["end"]}, 422, "start"),
        # Times still to come are the scheduler's: queued now they would run early.
        ({"start": window["start"], "end": "2999-01-01T00:00:00Z"}, 422, "end"),
        ({"start": "0001-01-01T00:00:00+14:00", "end": window["end"]}, 422, "start"),
    ):
        refused = await client.post(path, json=body, headers=editor)
        error = assert_error(refused, status, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == [field], (body, error)


async def test_the_scheduler_timeline_shows_the_next_fires_as_text(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    made = await _job(
        client,
        editor,
        "every-6h",
        {"pipeline_id": pipeline["id"]},
        cron_expr="0 */6 * * *",
        timezone="Asia/Tokyo",
    )
    off = await _job(client, editor, "off", {"pipeline_id": pipeline["id"]}, enabled=False)
    assert off["position"] > made["position"]
    shown = await client.get(  # read-your-writes, as the other job reads
        "/api/v1/visualize/scheduler", params={"min_position": off["position"]}, headers=editor
    )
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/plain")
    lines = shown.text.splitlines()
    assert "1 job(s) enabled" in lines[0]
    fires = [line for line in lines if "every-6h" in line]
    assert len(fires) == 4 and "Asia/Tokyo" in fires[0] and pipeline["id"] in fires[0]
    assert "off" not in shown.text.split("\n", 2)[2]
    short = await client.get(
        "/api/v1/visualize/scheduler", params={"hours": 24, "limit": 1}, headers=editor
    )
    assert "and at least 1 more" in short.text
    for params in ({"hours": 0}, {"hours": 169}, {"limit": 0}, {"min_position": "x"}):
        refused = await client.get("/api/v1/visualize/scheduler", params=params, headers=editor)
        assert_error(refused, 400, "VALIDATION_ERROR")
