"""The audit trail over HTTP against the real app, its relay and the audit read model
(one app for the module, each test in tenants of its own): GET /api/v1/events and its
filters, paging without gap or duplicate, isolation between tenants and between roles,
the per-resource routes, ?as_of= point-in-time reads, and `norn events export`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
from litestar.testing import AsyncTestClient

from api.cli_export import export as export_events
from infrastructure.envelope import encode, to_cloud_event
from infrastructure.notification_log import _notification
from infrastructure.settings import Settings
from projections import AuditLogProjection, rebuild
from tests.integration.api_client import assert_error, create_pipeline, pipeline_body, unique
from tests.integration.deployment_client import Headers, deploy, new_tenant, new_user

EVENTS = "/api/v1/events"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


NORN = str(Path(sys.executable).parent / "norn")


async def events(
    client: AsyncTestClient, headers: Headers, position: int, path: str = EVENTS, **params: Any
) -> list[dict[str, Any]]:
    """Every event the route lists (all pages), once the audit model has `position`."""
    found: list[dict[str, Any]] = []
    query: dict[str, Any] = {"min_position": position, "limit": 500, **params}
    while True:
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["items"])
        if not body["has_more"]:
            return found
        query["cursor"] = body["next_cursor"]


async def revise(client: AsyncTestClient, headers: Headers, pipeline: dict[str, Any]) -> Any:
    body = pipeline_body(pipeline["name"], description="revision 2")
    revised = await client.put(f"/api/v1/pipelines/{pipeline['id']}", json=body, headers=headers)
    assert revised.status_code == 200, revised.text
    return revised


async def test_filters_select_by_type_resource_actor_time_and_position(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    created = await client.post("/api/v1/pipelines", json=pipeline_body("etl"), headers=editor)
    assert created.status_code == 201, created.text
    pipeline = created.json()
    revised = await revise(client, editor, pipeline)
    other = await create_pipeline(client, editor, "other")
    last = other["position"]

    ours = await events(client, editor, last, types="norn.pipeline.*")
    assert [(e["subject"], e["version"]) for e in ours] == [
        (pipeline["id"], 1),
        (pipeline["id"], 2),
        (other["id"], 1),
    ]
    assert [e["type"] for e in ours[:2]] == ["norn.pipeline.created.v1", "norn.pipeline.revised.v1"]
    positions = [e["position"] for e in ours]
    assert positions == sorted(positions)
    # Each item is the CloudEvent, with the request that caused it.
    first = ours[0]
    assert first["specversion"] == "1.0" and first["data"]["definition"]["name"] == "etl"
    assert first["requestid"] == created.headers["x-request-id"]
    assert ours[1]["requestid"] == revised.headers["x-request-id"]
    assert first["actor"].startswith("user:") and first["tenant"] == pipeline["tenant_id"]

    by_resource = await events(client, editor, last, resources=f"pipeline:{pipeline['id']}")
    assert [e["version"] for e in by_resource] == [1, 2]
    globbed = await events(client, editor, last, types="norn.pipeline.rev?sed.v[0-9]")
    assert [e["subject"] for e in globbed] == [pipeline["id"]]
    by_actor = await events(client, editor, last, actor=first["actor"])
    assert by_actor and {e["actor"] for e in by_actor} == {first["actor"]}
    assert not await events(client, editor, last, actor="user:nobody")

    window = {"after": first["position"], "before": ours[2]["position"]}
    in_window = await events(client, editor, last, types="norn.pipeline.*", **window)
    assert [e["position"] for e in in_window] == [ours[1]["position"]]
    since = await events(client, editor, last, types="norn.pipeline.*", since=ours[1]["time"])
    assert [e["position"] for e in since] == positions[1:]
    until = await events(client, editor, last, types="norn.pipeline.*", until=ours[1]["time"])
    assert [e["position"] for e in until] == positions[:1]
    newest_first = await events(client, editor, last, types="norn.pipeline.*", order="desc")
    assert [e["position"] for e in newest_first] == positions[::-1]


async def test_pages_follow_each_other_without_gap_or_duplicate(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    last = 0
    for n in range(4):
        last = (await create_pipeline(client, editor, f"p{n}"))["position"]
    everything = await events(client, editor, last)
    assert len(everything) >= 8  # each create: the pipeline, its name claim, its usage...
    for order in ("asc", "desc"):
        walked, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 3, "order": order, "min_position": last}
            if cursor:
                params["cursor"] = cursor
            page = await client.get(EVENTS, params=params, headers=editor)
            assert page.status_code == 200, page.text
            walked.extend(e["position"] for e in page.json()["items"])
            if not page.json()["has_more"]:
                break
            assert 'rel="next"' in page.headers["link"]
            cursor = page.json()["next_cursor"]
        expected = [e["position"] for e in everything]
        assert walked == (expected if order == "asc" else expected[::-1])


async def test_bad_filters_are_400s_naming_the_parameter(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    for params, field in (
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),  # no offset
        ({"resources": "pipeline:not-a-uuid"}, "resources"),
        ({"resources": "planet:" + str(uuid4())}, "resources"),
        ({"types": "norn.[z-a]"}, "types"),
        ({"cursor": "%%%"}, "cursor"),
        ({"after": -1}, "after"),
        ({"after": 2**64}, "after"),
        ({"order": "sideways"}, "order"),
        ({"offset": 10}, "offset"),
    ):
        response = await client.get(EVENTS, params=params, headers=editor)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert field in response.text, (params, error)


async def test_a_tenant_never_sees_another_tenants_events(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    a_tenant, a_editor, admin = await new_tenant(client, module_settings)
    b_tenant, b_editor, _ = await new_tenant(client, module_settings)
    b_admin = await new_user(client, admin, b_tenant, "admin")
    pipeline = await create_pipeline(client, a_editor, "a-secret")
    revised = await revise(client, a_editor, pipeline)
    deployment = await deploy(client, a_editor, pipeline["id"], "a-prod")
    last = deployment["position"]
    a_events = await events(client, {**admin, "X-Tenant-ID": a_tenant}, last)
    a_ids = {e["subject"] for e in a_events} | {e["id"] for e in a_events}
    assert pipeline["id"] in a_ids and deployment["id"] in a_ids

    queries: list[dict[str, Any]] = [
        {},
        {"types": "*"},
        {"resources": f"pipeline:{pipeline['id']},deployment:{deployment['id']}"},
        {"resources": f"tenant:{a_tenant}"},
        {"actor": a_events[0]["actor"]},
        {"tenant": a_tenant},
        {"after": 0, "since": "2000-01-01T00:00:00Z"},
        {"order": "desc"},
    ]
    for who in (b_editor, b_admin):
        for params in queries:
            seen = await events(client, who, last, **params)
            assert {e["tenant"] for e in seen} <= {b_tenant}, params
            assert not a_ids & ({e["subject"] for e in seen} | {e["id"] for e in seen}), params
        for path in (
            f"/api/v1/pipelines/{pipeline['id']}/events",
            f"/api/v1/deployments/{deployment['id']}/events",
            f"/api/v1/tenants/{a_tenant}/events",
            f"/api/v1/pipelines/{pipeline['id']}?as_of={revised.json()['position']}",
            f"/api/v1/deployments/{deployment['id']}?as_of={last}",
        ):
            assert_error(await client.get(path, headers=b_admin), 404, "RESOURCE_NOT_FOUND")

    # The platform admin sees every tenant, and narrows with `tenant` or X-Tenant-ID.
    everyone = await events(client, admin, last, types="norn.tenant.created.v1", after=0)
    assert {a_tenant, b_tenant} <= {e["tenant"] for e in everyone}
    only_a = await events(client, admin, last, tenant=a_tenant)
    assert {e["tenant"] for e in only_a} == {a_tenant}
    assert [e["position"] for e in only_a] == [e["position"] for e in a_events]


async def test_a_viewer_sees_resource_events_and_an_admin_identity_events_too(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant, editor, admin = await new_tenant(client, module_settings)
    viewer = await new_user(client, admin, tenant, "viewer")
    tenant_admin = await new_user(client, admin, tenant, "admin")
    key = await client.post(
        "/api/v1/api-keys", json={"name": unique("k"), "roles": ["viewer"]}, headers=tenant_admin
    )
    assert key.status_code == 201, key.text
    pipeline = await create_pipeline(client, editor, "shown")
    last = pipeline["position"]

    identity = {"user", "api_key", "session", "usage", "tenant"}
    seen_by_viewer = {e["type"].split(".")[1] for e in await events(client, viewer, last)}
    assert "pipeline" in seen_by_viewer and not seen_by_viewer & identity
    by_type = await events(client, viewer, last, types="norn.user.*,norn.session.*")
    assert by_type == []
    seen_by_admin = {e["type"].split(".")[1] for e in await events(client, tenant_admin, last)}
    assert {"pipeline", "user", "session", "api_key", "usage", "tenant"} <= seen_by_admin
    # A role that may not read a resource does not read its events either.
    user_id = (await client.get("/api/v1/auth/me", headers=tenant_admin)).json()["id"]
    refused = await client.get(f"/api/v1/users/{user_id}/events", headers=viewer)
    assert_error(refused, 403, "PERMISSION_DENIED")
    own = await events(client, tenant_admin, last, f"/api/v1/users/{user_id}/events")
    assert own and {e["subject"] for e in own} == {user_id}


async def test_each_resource_lists_its_own_events(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant, editor, admin = await new_tenant(client, module_settings)
    tenant_admin = await new_user(client, admin, tenant, "admin")
    pipeline = await create_pipeline(client, editor, "mine")
    run = await client.post(
        f"/api/v1/pipelines/{pipeline['id']}/runs", json={"params": {}}, headers=editor
    )
    assert run.status_code in (201, 202), run.text
    deployment = await deploy(client, editor, pipeline["id"], "staging")
    job = await client.post(
        "/api/v1/scheduler/jobs",
        json={"name": "nightly", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"},
        headers=editor,
    )
    assert job.status_code == 201, job.text
    user_id = (await client.get("/api/v1/auth/me", headers=tenant_admin)).json()["id"]
    last = job.json()["position"]
    for path, kind, ident in (
        (f"/api/v1/pipelines/{pipeline['id']}/events", "pipeline", pipeline["id"]),
        (f"/api/v1/runs/{run.json()['run_id']}/events", "run", run.json()["run_id"]),
        (f"/api/v1/deployments/{deployment['id']}/events", "deployment", deployment["id"]),
        (f"/api/v1/scheduler/jobs/{job.json()['id']}/events", "job", job.json()["id"]),
        (f"/api/v1/tenants/{tenant}/events", "tenant", tenant),
        (f"/api/v1/users/{user_id}/events", "user", user_id),
    ):
        found = await events(client, tenant_admin, last, path)
        assert found and {(e["type"].split(".")[1], e["subject"]) for e in found} == {
            (kind, ident)
        }, path
        assert [e["version"] for e in found] == list(range(1, len(found) + 1)), path
        missing = path.replace(ident, str(uuid4()))
        assert_error(await client.get(missing, headers=tenant_admin), 404, "RESOURCE_NOT_FOUND")
    # Filters apply within a resource too.
    created = await events(
        client,
        tenant_admin,
        last,
        f"/api/v1/pipelines/{pipeline['id']}/events",
        types="norn.pipeline.created.v1",
    )
    assert [e["version"] for e in created] == [1]


async def test_as_of_reads_the_resource_as_it_was(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    before = await create_pipeline(client, editor, "earlier")
    pipeline = await create_pipeline(client, editor, "etl")
    revised = (await revise(client, editor, pipeline)).json()
    path = f"/api/v1/pipelines/{pipeline['id']}"

    then = await client.get(path, params={"as_of": pipeline["position"]}, headers=editor)
    assert then.status_code == 200, then.text
    assert (then.json()["revision"], then.json()["description"]) == (1, pipeline["description"])
    assert then.headers["etag"] == '"1"'
    now = await client.get(path, params={"min_position": revised["position"]}, headers=editor)
    at_revision = await client.get(path, params={"as_of": revised["position"]}, headers=editor)
    assert at_revision.json() == now.json()  # the same schema, the same fields
    history = await events(client, editor, revised["position"], f"{path}/events")
    by_time = await client.get(path, params={"as_of": history[0]["time"]}, headers=editor)
    assert by_time.json()["revision"] == 1
    assert (await client.get(path, params={"as_of": history[1]["time"]}, headers=editor)).json()[
        "revision"
    ] == 2
    for as_of in (before["position"], "2000-01-01T00:00:00Z"):
        missing = await client.get(path, params={"as_of": as_of}, headers=editor)
        assert_error(missing, 404, "RESOURCE_NOT_FOUND")
    for bad in ("yesterday", "2026-01-01T00:00:00", "-3", str(2**64)):
        refused = await client.get(path, params={"as_of": bad}, headers=editor)
        assert "as_of" in assert_error(refused, 400, "VALIDATION_ERROR")["message"]

    deployment = await deploy(client, editor, pipeline["id"], "prod", labels={"v": "1"})
    retired = await client.delete(f"/api/v1/deployments/{deployment['id']}", headers=editor)
    assert retired.status_code == 200, retired.text
    shown = await client.get(
        f"/api/v1/deployments/{deployment['id']}",
        params={"as_of": deployment["position"]},
        headers=editor,
    )
    assert shown.status_code == 200, shown.text
    assert (shown.json()["status"], shown.json()["retired"], shown.json()["labels"]) == (
        "active",
        False,
        {"v": "1"},
    )
    assert shown.json()["active_revision"] == 2 and shown.json()["release_count"] == 1

    job = await client.post(
        "/api/v1/scheduler/jobs",
        json={"name": "nightly", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"},
        headers=editor,
    )
    job_path = f"/api/v1/scheduler/jobs/{job.json()['id']}"
    disabled = await client.post(f"{job_path}/disable", headers=editor)
    assert disabled.status_code == 200, disabled.text
    earlier = await client.get(job_path, params={"as_of": job.json()["position"]}, headers=editor)
    assert earlier.status_code == 200, earlier.text
    assert (earlier.json()["enabled"], earlier.json()["cron_expr"]) == (True, "@daily")
    assert earlier.json()["created_by"] == then.json()["created_by"]
    later = await client.get(
        job_path, params={"as_of": disabled.json()["position"]}, headers=editor
    )
    assert later.json()["enabled"] is False


async def test_export_writes_the_tenants_events_as_ndjson_in_position_order(
    module_app: AsyncTestClient, module_settings: Settings, tmp_path: Path
) -> None:
    client = module_app
    tenant, editor, _ = await new_tenant(client, module_settings)
    await new_tenant(client, module_settings)  # another tenant's events are left out
    pipeline = await create_pipeline(client, editor, "exported")
    await revise(client, editor, pipeline)
    assert module_settings.database_url
    with psycopg.connect(module_settings.database_url) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM norn_events ORDER BY notification_id"
        ).fetchall()
    stored = [to_cloud_event(_notification(row)) for row in rows]
    expected = [json.loads(encode(e)) for e in stored if e.tenant == tenant]
    middle = expected[len(expected) // 2]["time"]

    def at(event: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(event["time"])

    def export(*extra: str) -> list[dict[str, Any]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NORN_")}
        env.update(
            NORN_DATABASE_URL=module_settings.database_url or "", NORN_DATA_DIR=str(tmp_path)
        )
        done = subprocess.run(  # noqa: S603
            [NORN, "events", "export", "--tenant", tenant, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # not a terminal: no progress line
        return [json.loads(line) for line in done.stdout.splitlines()]

    assert export() == expected
    # On a terminal, a progress line on stderr; stdout the same events.
    out, err = io.StringIO(), Terminal()
    assert module_settings.database_url
    written = await export_events(module_settings.database_url, tenant, None, None, out, err)
    assert written == len(expected)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == expected
    assert f"exporting tenant {tenant}: " in err.getvalue() and "(100%)" in err.getvalue()

    cut = datetime.fromisoformat(middle)
    assert export("--since", middle) == [e for e in expected if at(e) >= cut]
    assert export("--until", middle) == [e for e in expected if at(e) < cut]


async def test_odd_values_are_answered_never_with_a_server_error(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, admin = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "odd")
    odd: list[dict[str, Any]] = [
        *({"types": t} for t in ("[", "]", "\\", "[!]", "norn.[a-", "(", "*{2}", "^$", "[\\]]")),
        {"types": "a" * 2000},
        {"actor": "x\\y'\"%_"},
        {"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"},
        {"after": 2**63 - 1, "before": 0},
        {"resources": ",,," + f"pipeline:{pipeline['id'].upper()}"},
        {"tenant": str(uuid4()), "order": "desc", "limit": 500},
    ]
    for params in odd:
        for who in (editor, admin):
            response = await client.get(EVENTS, params=params, headers=who)
            assert response.status_code in (200, 400), (params, response.text)
    path = f"/api/v1/pipelines/{pipeline['id']}"
    for as_of in ("0", str(2**63 - 1), "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        response = await client.get(path, params={"as_of": as_of}, headers=editor)
        assert response.status_code in (200, 404), (as_of, response.text)


async def test_the_audit_log_rebuilds_to_the_same_rows_and_a_replay_changes_nothing(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "rebuilt")
    last = (await revise(client, editor, pipeline)).json()["position"]
    await events(client, editor, last)  # the live read model has reached it
    url = module_settings.database_url or ""

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            return conn.execute(
                "SELECT * FROM audit_log WHERE position <= %s ORDER BY position", (last,)
            ).fetchall()

    before = rows()
    assert len(before) >= 4
    await rebuild(AuditLogProjection(), url)
    assert rows() == before
    # The handler applied to the same events again (as a replay would): no change.
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM norn_events WHERE notification_id <= %s ORDER BY notification_id",
            (last,),
        ).fetchall()
    projection = AuditLogProjection()
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.cursor() as cur:
        for row in stored:
            event = to_cloud_event(_notification(row))
            handler = projection.handler(event.type)
            assert handler is not None
            await handler(cur, event)
        await conn.commit()
    assert rows() == before
