"""Quotas and usage over HTTP against real PostgreSQL and NATS: who may set them, what
usage shows, QUOTA_EXCEEDED with nothing written, and exact limits under concurrency.

The concurrency tests run the app under a real server (`serving_app`): the in-process
test client handles one request at a time, so requests gathered over it never overlap."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from domain.tenant import PLAN_QUOTAS, QUOTA_NAMES
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    running_app,
    serving_app,
    wait_ready,
)

Headers = dict[str, str]
PASSWORD = "correct-horse-battery-staple"


async def set_quotas(
    client: httpx.AsyncClient, admin: Headers, tenant_id: str, **quotas: Any
) -> dict[str, Any]:
    response = await client.put(f"/api/v1/tenants/{tenant_id}/quotas", json=quotas, headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def usage_of(client: httpx.AsyncClient, headers: Headers, tenant_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/tenants/{tenant_id}/usage", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["quotas"])


async def pipelines_used(client: httpx.AsyncClient, headers: Headers, tenant_id: str) -> int:
    used = (await usage_of(client, headers, tenant_id))["max_pipelines"]["used"]
    assert isinstance(used, int)
    return used


def stored_events(settings: Settings) -> int:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM norn_events").fetchone()
    assert row is not None
    return int(row[0])


async def live_pipelines(client: httpx.AsyncClient, headers: Headers, position: int) -> list[str]:
    listed = await client.get(
        "/api/v1/pipelines", params={"limit": 500, "min_position": position}, headers=headers
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["next_cursor"] is None
    return [p["name"] for p in listed.json()["items"]]


async def tenant_with_admin(
    client: httpx.AsyncClient, settings: Settings
) -> tuple[Headers, str, Headers]:
    root = await login(client, settings.admin_username or "", settings.admin_password or "")
    tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
    return root, tenant_id, admin


async def test_only_a_platform_admin_sets_quotas_and_null_means_the_plan_default(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root, tenant_id, admin = await tenant_with_admin(client, settings)
        free = PLAN_QUOTAS["free"]
        path = f"/api/v1/tenants/{tenant_id}/quotas"

        response = await client.put(path, json={"max_pipelines": 3, "max_jobs": 0}, headers=root)
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["etag"] == f'"{body["version"]}"'
        assert body["quota_overrides"] == {"max_pipelines": 3, "max_jobs": 0}
        assert body["quotas"]["max_pipelines"] == 3 and body["quotas"]["max_jobs"] == 0
        assert body["quotas"]["max_deployments"] == free.max_deployments
        read = await client.get(
            f"/api/v1/tenants/{tenant_id}",
            params={"min_position": body["position"]},
            headers=admin,
        )
        assert read.json()["quotas"] == body["quotas"]

        refused = await client.put(path, json={"max_pipelines": 10_000}, headers=admin)
        assert_error(refused, 403, "PERMISSION_DENIED")
        for bad in (
            {"max_pipelines": -1},
            {"max_pipelines": 10_000_001},
            {"max_pipelines": "many"},
            {"max_unicorns": 1},
        ):
            assert_error(await client.put(path, json=bad, headers=root), 422, "VALIDATION_ERROR")
        limits = await usage_of(client, admin, tenant_id)
        assert (limits["max_pipelines"]["limit"], limits["max_jobs"]["limit"]) == (3, 0)

        # A PUT replaces the whole set of overrides: null or absent = the plan's default.
        reset = await set_quotas(client, root, tenant_id, max_pipelines=None, max_runs_per_day=7)
        assert reset["quota_overrides"] == {"max_runs_per_day": 7}
        assert reset["quotas"]["max_pipelines"] == free.max_pipelines
        assert reset["quotas"]["max_jobs"] == free.max_jobs
        # Overrides outlive a plan change; the rest follows the new plan.
        pro = await client.put(f"/api/v1/tenants/{tenant_id}", json={"plan": "pro"}, headers=root)
        assert pro.json()["quotas"]["max_runs_per_day"] == 7
        assert pro.json()["quotas"]["max_pipelines"] == PLAN_QUOTAS["pro"].max_pipelines


async def test_usage_shows_each_limit_and_follows_creates_and_deletes_at_once(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root, tenant_id, admin = await tenant_with_admin(client, settings)
        quotas = await usage_of(client, admin, tenant_id)
        assert set(quotas) == set(QUOTA_NAMES)
        for name, usage in quotas.items():
            assert usage["limit"] == getattr(PLAN_QUOTAS["free"], name), name
        assert quotas["max_pipelines"]["used"] == 0
        assert quotas["max_jobs"]["used"] == 0  # counted (projections/usage.py), not null

        created = [await create_pipeline(client, admin, f"p{i}") for i in range(3)]
        # No min_position, no waiting: usage counts what the store holds right now.
        assert await pipelines_used(client, admin, tenant_id) == 3
        clone = await client.post(
            f"/api/v1/pipelines/{created[0]['id']}/clone", json={"name": "copy"}, headers=admin
        )
        assert clone.status_code == 201, clone.text
        assert await pipelines_used(client, admin, tenant_id) == 4
        for pipeline in created[:2]:
            gone = await client.delete(f"/api/v1/pipelines/{pipeline['id']}", headers=admin)
            assert gone.status_code == 200, gone.text
        assert await pipelines_used(client, admin, tenant_id) == 2
        revised = await client.put(
            f"/api/v1/pipelines/{created[2]['id']}", json=pipeline_body("p2-v2"), headers=admin
        )
        assert revised.status_code == 200, revised.text
        assert await pipelines_used(client, admin, tenant_id) == 2  # a revision adds nothing

        # The same, once the read model has everything.
        names = await live_pipelines(client, admin, revised.json()["position"])
        assert sorted(names) == ["copy", "p2-v2"]
        assert await pipelines_used(client, root, tenant_id) == 2

        # Who may look: the tenant's admin and platform admins; not its editors, and no
        # other tenant's admin.
        editor = await client.post(
            "/api/v1/users",
            json={
                "username": "eddie",
                "password": PASSWORD,
                "tenant_id": tenant_id,
                "roles": ["editor"],
            },
            headers=root,
        )
        assert editor.status_code == 201, editor.text
        as_editor = await client.get(
            f"/api/v1/tenants/{tenant_id}/usage", headers=await login(client, "eddie", PASSWORD)
        )
        assert_error(as_editor, 403, "PERMISSION_DENIED")
        _, stranger = await make_tenant_user(client, root, "globex", "admin")
        as_stranger = await client.get(f"/api/v1/tenants/{tenant_id}/usage", headers=stranger)
        assert_error(as_stranger, 404, "RESOURCE_NOT_FOUND")


async def test_a_create_past_the_limit_is_refused_and_writes_nothing(settings: Settings) -> None:
    async with running_app(settings) as client:
        root, tenant_id, admin = await tenant_with_admin(client, settings)
        await set_quotas(client, root, tenant_id, max_pipelines=2)
        first = await create_pipeline(client, admin, "one")
        await create_pipeline(client, admin, "two")
        events_before = stored_events(settings)

        over = await client.post("/api/v1/pipelines", json=pipeline_body("three"), headers=admin)
        error = assert_error(over, 409, "QUOTA_EXCEEDED")
        assert error["details"] == [
            {"field": "max_pipelines", "message": "2 of 2 in use", "limit": 2, "used": 2}
        ]
        assert "max_pipelines" in error["message"]
        clone = await client.post(
            f"/api/v1/pipelines/{first['id']}/clone", json={"name": "three"}, headers=admin
        )
        assert assert_error(clone, 409, "QUOTA_EXCEEDED")["details"] == error["details"]

        # Nothing was written: no event, no pipeline, and the name "three" is not claimed.
        assert stored_events(settings) == events_before
        assert await pipelines_used(client, admin, tenant_id) == 2

        raised = await set_quotas(client, root, tenant_id, max_pipelines=3)
        three = await create_pipeline(client, admin, "three")
        names = await live_pipelines(client, admin, max(raised["position"], three["position"]))
        assert sorted(names) == ["one", "three", "two"]

        # Deleting frees a unit: a clone fits again.
        assert_error(
            await client.post(
                f"/api/v1/pipelines/{first['id']}/clone", json={"name": "four"}, headers=admin
            ),
            409,
            "QUOTA_EXCEEDED",
        )
        gone = await client.delete(f"/api/v1/pipelines/{three['id']}", headers=admin)
        assert gone.status_code == 200, gone.text
        four = await client.post(
            f"/api/v1/pipelines/{first['id']}/clone", json={"name": "four"}, headers=admin
        )
        assert four.status_code == 201, four.text

        # A limit lowered below the usage keeps what exists and refuses what would add.
        await set_quotas(client, root, tenant_id, max_pipelines=1)
        lowered = await client.post("/api/v1/pipelines", json=pipeline_body("five"), headers=admin)
        details = assert_error(lowered, 409, "QUOTA_EXCEEDED")["details"]
        assert details == [
            {"field": "max_pipelines", "message": "3 of 1 in use", "limit": 1, "used": 3}
        ]
        assert await pipelines_used(client, admin, tenant_id) == 3


async def concurrent_creates(
    client: httpx.AsyncClient, admin: Headers, count: int
) -> dict[int, list[Any]]:
    """`count` creates at once; the responses by status code."""
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/pipelines", json=pipeline_body(f"c{i}"), headers=admin)
            for i in range(count)
        )
    )
    by_status: dict[int, list[Any]] = {}
    for response in responses:
        by_status.setdefault(response.status_code, []).append(response)
    return by_status


async def test_concurrent_creates_near_the_limit_take_exactly_the_free_units(
    settings: Settings,
) -> None:
    async with serving_app(settings) as client:
        await wait_ready(client)
        root, tenant_id, admin = await tenant_with_admin(client, settings)
        limit = 4
        await set_quotas(client, root, tenant_id, max_pipelines=limit)
        await create_pipeline(client, admin, "existing")

        by_status = await concurrent_creates(client, admin, 3 * limit)

        assert sorted(by_status) == [201, 409], {s: len(r) for s, r in by_status.items()}
        assert len(by_status[201]) == limit - 1
        for refused in by_status[409]:
            error = assert_error(refused, 409, "QUOTA_EXCEEDED")
            [detail] = error["details"]
            assert (detail["field"], detail["limit"]) == ("max_pipelines", limit)
            assert detail["used"] >= limit  # every refusal saw the tenant full
        assert await pipelines_used(client, admin, tenant_id) == limit
        position = max(r.json()["position"] for r in by_status[201])
        assert len(await live_pipelines(client, admin, position)) == limit


async def test_concurrent_creates_far_below_the_limit_all_succeed_and_count_exactly(
    settings: Settings,
) -> None:
    async with serving_app(settings) as client:
        await wait_ready(client)
        root, tenant_id, admin = await tenant_with_admin(client, settings)
        count = 20
        # The tenant's creates take turns on its usage in this process, none refused.
        await set_quotas(client, root, tenant_id, max_pipelines=1000)

        by_status = await concurrent_creates(client, admin, count)

        assert list(by_status) == [201], {s: [r.text for r in rs] for s, rs in by_status.items()}
        assert len(by_status[201]) == count
        assert await pipelines_used(client, admin, tenant_id) == count
        position = max(r.json()["position"] for r in by_status[201])
        assert len(await live_pipelines(client, admin, position)) == count
        assert await pipelines_used(client, admin, tenant_id) == count
