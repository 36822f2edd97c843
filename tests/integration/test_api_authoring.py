"""Authoring help over HTTP against real Postgres and NATS: POST /pipelines/generate,
{id}:regenerate, :describe and :analyze. A viewer may use them all (they save nothing);
another tenant's pipeline is a 404 as on GET; figures come from the run history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from litestar.testing import AsyncTestClient

from application.authorization import Permission, authorize
from application.errors import PermissionDenied
from application.principal import Principal
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    make_tenant_user,
    platform_admin,
    unique,
)
from tests.integration.run_support import seed_run

BASE = "/api/v1/pipelines"
DESCRIPTION = (
    "Read orders.csv, keep only paid orders where amount > 100, total amount by customer, "
    "and write to totals.json"
)
DEFECTIVE = {
    "steps": [
        {"name": "fetch", "plugin": "Input.http",
         "config": {"url": "https://api.example.com/orders"}},
        {"name": "totals", "plugin": "Data_Processing.aggregate",
         "config": {"aggregates": {"total": "sum:amount"}, "group_by": ["customer"]},
         "depends_on": ["fetch"]},
        {"name": "big", "plugin": "Data_Processing.filter",
         "config": {"expression": "amount > 100"}, "depends_on": ["totals"]},
        {"name": "none", "plugin": "Data_Processing.filter", "config": {"expression": "false"},
         "depends_on": ["big"]},
        {"name": "write", "plugin": "Output.file", "config": {"path": "out.jsonl"},
         "depends_on": ["none"]},
    ]
}  # fmt: skip


async def tenant(client: AsyncTestClient, settings: Settings, role: str) -> dict[str, str]:
    admin = await platform_admin(client, settings)
    return (await make_tenant_user(client, admin, unique("authoring"), role))[1]


async def make(client: AsyncTestClient, headers: dict[str, str], **body: Any) -> str:
    created = await client.post(BASE, json={"name": unique("p"), **body}, headers=headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_a_viewer_generates_a_valid_draft_byte_identical_each_time(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    viewer = await tenant(client, module_settings, "viewer")
    first = await client.post(f"{BASE}/generate", json={"description": DESCRIPTION}, headers=viewer)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"definition", "valid", "reasoning", "assumptions", "questions"}
    assert body["valid"] is True and body["questions"] == []
    assert [s["plugin"] for s in body["definition"]["steps"]] == [
        "Input.file", "Data_Processing.filter", "Data_Processing.aggregate", "Output.file"
    ]  # fmt: skip
    assert [r["step"] for r in body["reasoning"]] == ["read", "filter", "aggregate", "write"]
    again = await client.post(f"{BASE}/generate", json={"description": DESCRIPTION}, headers=viewer)
    assert again.content == first.content
    # the draft is a body POST /pipelines takes as it is (an editor saves it)
    listed = await client.get(BASE, headers=viewer)
    assert listed.json()["items"] == []  # generating saved nothing


async def test_questions_are_answered_by_hints_and_bad_bodies_refused(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    viewer = await tenant(client, module_settings, "viewer")
    asked = await client.post(
        f"{BASE}/generate", json={"description": "keep only paid orders"}, headers=viewer
    )
    assert asked.status_code == 200 and not asked.json()["questions"] == []
    keys = {q["key"] for q in asked.json()["questions"]}
    assert {"source", "destination"} <= keys
    answered = await client.post(
        f"{BASE}/generate",
        json={"description": "keep only paid orders", "name": "paid",
              "hints": {"source": "orders.jsonl", "destination": "paid.jsonl"}},
        headers=viewer,
    )  # fmt: skip
    body = answered.json()
    assert body["valid"] and body["questions"] == [] and body["definition"]["name"] == "paid"
    for bad in ({}, {"description": ""}, {"description": "x", "extra": 1}, {"description": 5}):
        assert_error(
            await client.post(f"{BASE}/generate", json=bad, headers=viewer), 422, "VALIDATION_ERROR"
        )
    assert_error(
        await client.post(f"{BASE}/generate", json={"description": "x"}), 401,
        "AUTHENTICATION_REQUIRED",
    )  # fmt: skip


async def test_regenerate_drafts_the_next_revision_or_names_what_it_cannot_apply(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    editor = await tenant(client, module_settings, "editor")
    pipeline_id = await make(
        client, editor,
        steps=[{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}},
               {"name": "write", "plugin": "Output.file", "config": {"path": "out.jsonl"},
                "depends_on": ["read"]}],
    )  # fmt: skip
    done = await client.post(
        f"{BASE}/{pipeline_id}:regenerate",
        json={"instructions": "add a filter where status = 'paid' after read; "
                              "write to out.csv instead"},
        headers=editor,
    )  # fmt: skip
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["base_revision"] == 1 and body["valid"] is True
    assert body["changes"]["steps_added"] == ["filter"]
    assert body["changes"]["steps_changed"] == ["write"]
    steps = {s["name"]: s for s in body["definition"]["steps"]}
    assert steps["write"]["config"] == {"path": "out.csv", "format": "csv"}
    assert steps["write"]["depends_on"] == ["filter"]
    # nothing saved: the pipeline is still at revision 1
    history = await client.get(f"{BASE}/{pipeline_id}/history", headers=editor)
    assert len(history.json()["items"]) == 1
    refused = await client.post(
        f"{BASE}/{pipeline_id}/regenerate",
        json={"instructions": "remove step nope; frobnicate"},
        headers=editor,
    )
    error = assert_error(refused, 422, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == ["instructions", "instructions"]
    assert "'remove step nope'" in error["details"][0]["message"]


async def test_describe_and_analyze_a_pipeline_with_known_defects(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    tenant_id, editor = await make_tenant_user(client, admin, unique("analyze"), "editor")
    pipeline_id = await make(client, editor, **DEFECTIVE)
    deployed = await client.post(
        f"{BASE}/{pipeline_id}:deploy",
        json={"environment": "staging", "schedule": "0 2 * * *"},
        headers=editor,
    )
    assert deployed.status_code in (201, 202), deployed.text
    await seed_history(module_settings.database_url or "", tenant_id, UUID(pipeline_id))

    described = await describe_when_listed(client, editor, pipeline_id)
    assert described["revision"] == 1
    assert described["deployments"] == ["staging: active, serving revision 1 (direct)"]
    assert described["schedules"][0].endswith("runs the staging deployment on the schedule "
                                              "'0 2 * * *' (UTC)")  # fmt: skip
    assert "keeps only the records for which `amount > 100` is true" in described["text"]

    analyzed = await client.post(f"{BASE}/{pipeline_id}:analyze", headers=editor)
    assert analyzed.status_code == 200, analyzed.text
    found = {(f["step"], f["code"]) for f in analyzed.json()["findings"]}
    assert {
        ("fetch", "network-no-retries"), ("fetch", "network-no-timeout"),
        ("big", "unknown-field"), ("none", "filter-never-passes"),
        ("write", "unreachable-step"), ("fetch", "failing-step"),
    } <= found  # fmt: skip
    assert all(f["suggestion"] for f in analyzed.json()["findings"])
    figures = analyzed.json()["figures"]
    assert figures["runs"] == 4 and figures["success_rate"] == 0.5
    fetch = figures["steps"][0]
    assert fetch["step"] == "fetch" and fetch["executed"] == 4 and fetch["failed"] == 2
    assert fetch["p50_duration_ms"] == 250.0 and fetch["p95_duration_ms"] == 385.0
    assert fetch["avg_records_out"] == 10.0
    assert figures["slowest_step"] == "fetch" and figures["most_failing_step"] == "fetch"


async def describe_when_listed(
    client: AsyncTestClient, headers: dict[str, str], pipeline_id: str
) -> dict[str, Any]:
    """:describe once the deployment and its job are in their read models."""
    for _ in range(100):
        response = await client.post(f"{BASE}/{pipeline_id}:describe", headers=headers)
        assert response.status_code == 200, response.text
        if response.json()["deployments"] and response.json()["schedules"]:
            return dict(response.json())
        await asyncio.sleep(0.1)
    raise AssertionError(response.text)


async def seed_history(database_url: str, tenant_id: str, pipeline_id: UUID) -> None:
    """Four finished runs; step fetch took 100, 200, 300 and 400 ms, and failed twice."""
    start = datetime.now(UTC) - timedelta(hours=1)
    for n, ms in enumerate((100, 200, 300, 400)):
        status = "failed" if n % 2 else "succeeded"
        run_id = await seed_run(
            database_url, tenant_id, pipeline_id, start + timedelta(minutes=n), status, 1000.0
        )
        began = start + timedelta(minutes=n)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO run_steps (run_id, name, ordinal, plugin, depends_on, status,"
                " attempts, started_at, finished_at, records_in, records_out)"
                " VALUES (%s, 'fetch', 0, 'Input.http', '{}', %s, 1, %s, %s, 0, 10)",
                (run_id, status, began, began + timedelta(milliseconds=ms)),
            )


async def test_another_tenants_pipeline_is_not_found_and_routes_need_pipelines_read(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    owner = await tenant(client, module_settings, "editor")
    stranger = await tenant(client, module_settings, "admin")
    pipeline_id = await make(client, owner, **DEFECTIVE)
    for action, body in (("regenerate", {"instructions": "remove step big"}),
                         ("describe", None), ("analyze", None)):  # fmt: skip
        theirs = await client.post(f"{BASE}/{pipeline_id}:{action}", json=body, headers=stranger)
        assert_error(theirs, 404, "RESOURCE_NOT_FOUND")
        missing = await client.post(f"{BASE}/{uuid4()}/{action}", json=body, headers=owner)
        assert_error(missing, 404, "RESOURCE_NOT_FOUND")
    # every authoring route asks for pipelines:read, which a principal without it lacks
    routes = _authoring_permissions(client)
    assert routes == {
        "/api/v1/pipelines/generate": Permission.PIPELINES_READ,
        "/api/v1/pipelines/{pipeline_id:uuid}/regenerate": Permission.PIPELINES_READ,
        "/api/v1/pipelines/{pipeline_id:uuid}/describe": Permission.PIPELINES_READ,
        "/api/v1/pipelines/{pipeline_id:uuid}/analyze": Permission.PIPELINES_READ,
    }
    nobody = Principal("u", "n", str(uuid4()), frozenset(), tenant_status="active")
    try:
        authorize(nobody, Permission.PIPELINES_READ)
        raise AssertionError("a principal without pipelines:read was let through")
    except PermissionDenied:
        pass
    schema = (await client.get("/schema/openapi.json")).json()["paths"]
    assert "/api/v1/pipelines/generate" in schema
    assert "/api/v1/pipelines/{pipeline_id}/analyze" in schema


def _authoring_permissions(client: AsyncTestClient) -> dict[str, Any]:
    found = {}
    for route in client.app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if handler.fn.__qualname__.startswith("AuthoringController."):
                found[route.path] = handler.opt.get("permission")
    return found
