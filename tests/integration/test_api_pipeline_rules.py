"""What the pipeline API refuses: invalid definitions, taken names, writes by viewers,
another tenant's pipelines, and all but one of concurrent writes. One app serves the
module, each test in tenants of its own."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    make_tenant_user,
    overlapping,
    pipeline_body,
    platform_admin,
    unique,
)

BASE = "/api/v1/pipelines"


def _step(name: str, plugin: str = "Input.file", **extra: Any) -> dict[str, Any]:
    return {"name": name, "plugin": plugin, "config": {"path": f"{name}.jsonl"}, **extra}


INVALID = {
    "duplicate step": ([_step("read"), _step("read", "Output.file")], "steps[1].name"),
    "unknown dependency": (
        [_step("read"), _step("write", "Output.file", depends_on=["ghost"])],
        "steps[1].depends_on",
    ),
    "cycle": (
        [_step("a", depends_on=["b"]), _step("b", "Output.file", depends_on=["a"])],
        "steps",
    ),
    "unknown plugin": ([_step("read", "Input.nope")], "steps[0].plugin"),
    "missing path": (
        [{"name": "read", "plugin": "Input.file", "config": {}}],
        "steps[0].config.path",
    ),
    "absolute path": (
        [_step("read") | {"config": {"path": "/etc/passwd"}}],
        "steps[0].config.path",
    ),
    "no steps": ([], "steps"),
    "bad filter expression": (
        [
            _step("read"),
            {
                "name": "keep",
                "plugin": "Data_Processing.filter",
                "config": {"expression": "amount >"},
                "depends_on": ["read"],
            },
        ],
        "steps[1].config.expression",
    ),
    "unsafe transform expression": (
        [
            _step("read"),
            {
                "name": "calc",
                "plugin": "Data_Processing.transform",
                "config": {"fields": {"total": "amount.__class__"}},
                "depends_on": ["read"],
            },
        ],
        "steps[1].config.fields.total",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_definitions_are_refused_naming_the_field(
    module_app: AsyncTestClient, module_settings: Settings, case: str
) -> None:
    steps, field = INVALID[case]
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    refused = await client.post(BASE, json=pipeline_body("bad", steps=steps), headers=editor)
    error = assert_error(refused, 422, "VALIDATION_ERROR")
    assert all(set(d) == {"field", "message"} for d in error["details"]), error
    assert field in [d["field"] for d in error["details"]], error

    good = await create_pipeline(client, editor, "good")
    url = f"{BASE}/{good['id']}"
    revised = await client.put(url, json=pipeline_body("good", steps=steps), headers=editor)
    error = assert_error(revised, 422, "VALIDATION_ERROR")
    assert field in [d["field"] for d in error["details"]], error

    seen = {"min_position": good["position"]}
    listed = await client.get(BASE, params=seen, headers=editor)
    assert [p["name"] for p in listed.json()["items"]] == ["good"]
    assert (await client.get(url, params=seen, headers=editor)).json()["revision"] == 1


async def test_names_are_unique_within_a_tenant_only(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, a = await make_tenant_user(client, admin, unique("acme"), "editor")
    _, b = await make_tenant_user(client, admin, unique("globex"), "editor")
    first = await create_pipeline(client, a, "nightly")
    for name in ("nightly", " Nightly "):
        dup = await client.post(BASE, json=pipeline_body(name), headers=a)
        error = assert_error(dup, 409, "RESOURCE_CONFLICT")
        assert error["details"] == [{"field": "name", "message": "already taken"}]
    await create_pipeline(client, b, "nightly")

    other = await create_pipeline(client, a, "weekly")
    rename = await client.put(f"{BASE}/{other['id']}", json=pipeline_body("nightly"), headers=a)
    assert_error(rename, 409, "RESOURCE_CONFLICT")
    moved = await client.put(f"{BASE}/{first['id']}", json=pipeline_body("hourly"), headers=a)
    assert moved.status_code == 200, moved.text
    # Renaming released the old name.
    await create_pipeline(client, a, "nightly")


async def test_a_viewer_reads_but_cannot_write(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    tenant_id, viewer = await make_tenant_user(client, admin, unique("acme"), "viewer")
    in_acme = {**admin, "X-Tenant-ID": tenant_id}
    created = await create_pipeline(client, in_acme, "nightly")
    url = f"{BASE}/{created['id']}"
    seen = {"min_position": created["position"]}

    got = await client.get(url, params=seen, headers=viewer)
    assert got.status_code == 200, got.text
    listed = await client.get(BASE, params=seen, headers=viewer)
    assert [p["id"] for p in listed.json()["items"]] == [created["id"]]
    assert (await client.get(f"{url}/history", headers=viewer)).status_code == 200
    assert (await client.post(f"{url}/validate", headers=viewer)).status_code == 200

    writes = [
        ("POST", BASE, pipeline_body("mine")),
        ("PUT", url, pipeline_body("nightly", description="changed")),
        ("POST", f"{url}/rollback", {"revision": 1}),
        ("POST", f"{url}/clone", {"name": "copy"}),
        ("DELETE", url, None),
    ]
    for method, path, body in writes:
        response = await client.request(method, path, json=body, headers=viewer)
        assert_error(response, 403, "PERMISSION_DENIED")
    history = (await client.get(f"{url}/history", headers=viewer)).json()["items"]
    assert len(history) == 1


async def test_another_tenants_pipeline_does_not_exist(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    tenant_a, a = await make_tenant_user(client, admin, unique("acme"), "editor")
    _, b = await make_tenant_user(client, admin, unique("globex"), "admin")
    created = await create_pipeline(client, a, "secret")
    url = f"{BASE}/{created['id']}"
    seen = {"min_position": created["position"]}

    attempts = [
        ("GET", url, None),
        ("PUT", url, pipeline_body("stolen")),
        ("DELETE", url, None),
        ("GET", f"{url}/history", None),
        ("GET", f"{url}/revisions/1", None),
        ("POST", f"{url}/rollback", {"revision": 1}),
        ("POST", f"{url}/clone", {"name": "stolen"}),
        ("POST", f"{url}/validate", None),
        ("POST", f"{url}:clone", {"name": "stolen"}),
    ]
    # Naming tenant A in X-Tenant-ID changes nothing for a tenant's own user.
    for headers in (b, {**b, "X-Tenant-ID": tenant_a}):
        for method, path, body in attempts:
            # min_position only where the route takes it: elsewhere it is a 400.
            params = seen if (method, path) == ("GET", url) else None
            response = await client.request(method, path, json=body, params=params, headers=headers)
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        listed = await client.get(BASE, params=seen, headers=headers)
        assert listed.status_code == 200 and listed.json()["items"] == []
        searched = await client.get(BASE, params={**seen, "name": "secret"}, headers=headers)
        assert searched.json()["items"] == []

    # Untouched by all of that.
    got = await client.get(url, params=seen, headers=a)
    assert got.json()["revision"] == 1 and got.json()["name"] == "secret"
    assert len((await client.get(f"{url}/history", headers=a)).json()["items"]) == 1


async def test_platform_admin_acts_in_a_tenant_by_header(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    tenant_a, a = await make_tenant_user(client, admin, unique("acme"), "editor")
    tenant_b, b = await make_tenant_user(client, admin, unique("globex"), "editor")
    in_a = {**admin, "X-Tenant-ID": tenant_a}

    made = await create_pipeline(client, in_a, "from-admin")
    assert made["tenant_id"] == tenant_a
    mine = await create_pipeline(client, a, "from-editor")
    seen = {"min_position": mine["position"]}
    listed = await client.get(BASE, params=seen, headers=in_a)
    assert sorted(p["name"] for p in listed.json()["items"]) == ["from-admin", "from-editor"]
    assert {
        p["name"] for p in (await client.get(BASE, params=seen, headers=a)).json()["items"]
    } == {
        "from-admin",
        "from-editor",
    }
    in_b = await client.get(BASE, params=seen, headers={**admin, "X-Tenant-ID": tenant_b})
    assert in_b.json()["items"] == []
    assert (await client.get(BASE, params=seen, headers=b)).json()["items"] == []

    nowhere = await client.post(BASE, json=pipeline_body("x"), headers=admin)
    assert_error(nowhere, 403, "PERMISSION_DENIED")
    missing = await client.get(BASE, headers={**admin, "X-Tenant-ID": str(uuid4())})
    assert_error(missing, 404, "RESOURCE_NOT_FOUND")
    malformed = await client.get(BASE, headers={**admin, "X-Tenant-ID": "not-a-uuid"})
    error = assert_error(malformed, 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "X-Tenant-ID"


async def test_concurrent_writes_with_one_version_let_exactly_one_win(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    created = await create_pipeline(client, editor, "contended")
    url = f"{BASE}/{created['id']}"
    headers = {**editor, "If-Match": '"1"'}

    async with overlapping(client) as raw:
        responses = await asyncio.gather(
            *(
                raw.put(
                    url,
                    json=pipeline_body("contended", description=f"writer {i}"),
                    headers=headers,
                )
                for i in range(8)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 409, 412}, statuses
    for response in responses:
        if response.status_code != 200:
            assert_error(response, response.status_code, "VERSION_CONFLICT")
    winner = next(r for r in responses if r.status_code == 200).json()
    assert winner["revision"] == 2

    got = await client.get(url, params={"min_position": winner["position"]}, headers=editor)
    assert got.json()["revision"] == 2
    assert got.json()["description"] == winner["description"]
    assert got.headers["etag"] == '"2"'
    history = (await client.get(f"{url}/history", headers=editor)).json()["items"]
    assert [h["revision"] for h in history] == [1, 2]


async def test_concurrent_creates_of_one_name_make_one_pipeline(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    async with overlapping(client) as raw:
        responses = await asyncio.gather(
            *(raw.post(BASE, json=pipeline_body("race"), headers=editor) for _ in range(6))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409}, statuses
    winner = next(r for r in responses if r.status_code == 201).json()
    listed = await client.get(BASE, params={"min_position": winner["position"]}, headers=editor)
    assert [p["id"] for p in listed.json()["items"]] == [winner["id"]]
