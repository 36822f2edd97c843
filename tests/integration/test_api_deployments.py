"""Deployments over HTTP: create, get, list and filters, releases, status, execute,
rollback and retire against the real app and its read models (one app for the module,
each test in a tenant of its own), and a blue-green release verified by a real run (an
app with an executor of its own)."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    make_tenant_user,
    running_app,
    unique,
)
from tests.integration.deployment_client import (
    BASE,
    BASE_ID,
    deploy,
    new_tenant,
    new_user,
    read_at,
    revise,
    status_when,
)
from tests.integration.run_support import EXECUTING, executing, make_pipeline, step


async def test_create_get_list_and_filter(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant_id, editor, _ = await new_tenant(client, module_settings)
    alpha = await create_pipeline(client, editor, "alpha")
    beta = await create_pipeline(client, editor, "beta")
    staging = await deploy(
        client,
        editor,
        alpha["id"],
        "staging",
        variables={"region": "eu"},
        labels={"tier": "gold"},
        description="alpha on staging",
    )
    assert staging["status"] == "active" and staging["active_release"] == 1
    release = staging["release"]
    assert release["release"] == 1 and release["revision"] == 1
    assert release["outcome"] == "active" and release["strategy"]["type"] == "direct"
    assert release["run_id"] is None and release["created_by"]
    await deploy(client, editor, alpha["id"], "production", labels={"tier": "silver"})
    last = await deploy(client, editor, beta["id"], "staging")

    got = await client.get(
        f"{BASE}/{staging['id']}", params={"min_position": staging["position"]}, headers=editor
    )
    assert got.status_code == 200, got.text
    shown = got.json()
    assert got.headers["etag"] == f'"{shown["version"]}"'
    assert shown["tenant_id"] == tenant_id and shown["pipeline_id"] == alpha["id"]
    assert shown["variables"] == {"region": "eu"} and shown["labels"] == {"tier": "gold"}
    assert shown["description"] == "alpha on staging" and shown["retired"] is False
    assert (shown["active_release"], shown["active_revision"]) == (1, 1)

    async def listed(**params: Any) -> list[tuple[str, str]]:
        page = await read_at(client, editor, BASE, last["position"], **params)
        return [(d["pipeline_id"], d["environment"]) for d in page["items"]]

    everything = [(alpha["id"], "staging"), (alpha["id"], "production"), (beta["id"], "staging")]
    assert await listed() == everything
    assert await listed(pipeline_id=alpha["id"]) == everything[:2]
    assert await listed(environment="staging") == [everything[0], everything[2]]
    assert await listed(label="tier=gold") == everything[:1]
    assert await listed(status="active") == everything
    assert await listed(status="retired") == []
    first = await read_at(client, editor, BASE, last["position"], limit=2)
    assert len(first["items"]) == 2 and first["has_more"] and first["next_cursor"]
    rest = await read_at(client, editor, BASE, 0, cursor=first["next_cursor"])
    assert [d["id"] for d in rest["items"]] == [last["id"]] and not rest["has_more"]

    bad_status = await client.get(BASE, params={"status": "sleeping"}, headers=editor)
    assert bad_status.status_code == 400, bad_status.text
    bad_label = await client.get(BASE, params={"label": "tier"}, headers=editor)
    assert bad_label.status_code == 400, bad_label.text
    bad_cursor = await client.get(BASE, params={"cursor": "not-a-cursor"}, headers=editor)
    error = assert_error(bad_cursor, 400, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == ["cursor"]


async def test_one_deployment_per_pipeline_and_environment(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    first = await deploy(client, editor, pipeline["id"], "production")
    again = await client.post(
        BASE, json={"pipeline_id": pipeline["id"], "environment": "production"}, headers=editor
    )
    error = assert_error(again, 409, "RESOURCE_CONFLICT")
    assert error["details"] == [{"field": "environment", "message": "already taken"}]
    assert "environment 'production'" in error["message"]

    # Retiring frees the pair: a new deployment may take the environment.
    retired = await client.delete(f"{BASE}/{first['id']}", headers=editor)
    assert retired.status_code == 200, retired.text
    assert retired.json()["retired"] is True and retired.json()["id"] == first["id"]
    second = await deploy(client, editor, pipeline["id"], "production")
    assert second["id"] != first["id"]


async def test_release_status_and_rollback(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    deployment = await deploy(client, editor, pipeline["id"], "staging")
    path = f"{BASE}/{deployment['id']}"
    await revise(client, editor, pipeline)

    released = await client.post(f"{path}/releases", json={"revision": 2}, headers=editor)
    assert released.status_code == 201, released.text
    body = released.json()
    assert body["release"]["release"] == 2 and body["release"]["revision"] == 2
    assert body["release"]["outcome"] == "active" and body["active_release"] == 2

    releases = await read_at(client, editor, f"{path}/releases", body["position"])
    assert [(r["release"], r["revision"], r["outcome"]) for r in releases["items"]] == [
        (1, 1, "superseded"),
        (2, 2, "active"),
    ]
    status = await read_at(client, editor, f"{path}/status", body["position"])
    assert status["status"] == "active" and status["verifying"] is None
    assert (status["active_release"], status["active_revision"]) == (2, 2)
    assert [r["release"] for r in status["recent_releases"]] == [2, 1]

    missing = await client.post(f"{path}/releases", json={"revision": 99}, headers=editor)
    assert_error(missing, 422, "VALIDATION_ERROR")

    rolled = await client.post(f"{path}/rollback", json={}, headers=editor)
    assert rolled.status_code == 200, rolled.text
    answer = rolled.json()
    assert (answer["release"], answer["rolled_back_to"], answer["previous_release"]) == (3, 1, 2)
    status = await read_at(client, editor, f"{path}/status", answer["position"])
    assert (status["active_release"], status["active_revision"]) == (3, 1)
    releases = await read_at(client, editor, f"{path}/releases", answer["position"])
    outcomes = [(r["release"], r["outcome"], r["rolled_back_to"]) for r in releases["items"]]
    assert outcomes == [(1, "superseded", None), (2, "rolled_back", None), (3, "active", 1)]
    history = await client.get(f"{path}/history", headers=editor)
    assert history.status_code == 200, history.text
    events = [(h["version"], h["event"]) for h in history.json()["items"]]
    assert events == [
        (1, "created"),
        (2, "release_activated"),
        (3, "release_activated"),
        (4, "rolled_back"),
    ]
    first = history.json()["items"][0]
    assert first["type"] == "norn.deployment.created.v1" and first["actor"]
    assert first["data"]["environment"] == "staging" and "tenant_id" not in first["data"]
    assert history.json()["items"][3]["data"]["rolled_back_to"] == 1
    # The pipeline's own revisions are untouched.
    shown = await client.get(f"/api/v1/pipelines/{pipeline['id']}", headers=editor)
    assert shown.json()["revision"] == 2

    # The `:action` spelling reaches the same route; stale If-Match is a 412.
    stale = await client.post(
        f"{path}:rollback", json={"to_release": 2}, headers={**editor, "If-Match": '"1"'}
    )
    assert stale.status_code == 412, stale.text


async def test_execute_runs_the_active_release_until_retired(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    deployment = await deploy(client, editor, pipeline["id"], "staging")
    path = f"{BASE}/{deployment['id']}"
    await revise(client, editor, pipeline)  # the deployment still runs revision 1

    executed = await client.post(f"{path}/execute", json={"params": {"k": "v"}}, headers=editor)
    assert executed.status_code == 202, executed.text
    run = executed.json()
    assert run["status"] == "queued" and run["success"] is None
    assert (run["revision"], run["release"]) == (1, 1)
    assert executed.headers["location"] == f"/api/v1/runs/{run['run_id']}"
    shown_run = await read_at(client, editor, f"/api/v1/runs/{run['run_id']}", run["position"])
    assert shown_run["params"] == {"k": "v"}
    assert shown_run["trigger"] == {
        "kind": "deployment",
        "id": deployment["id"],
        "environment": "staging",
        "release": 1,
    }
    for params in ({"deployment_id": deployment["id"]}, {"environment": "staging"}):
        runs = await read_at(client, editor, "/api/v1/runs", run["position"], **params)
        assert [r["id"] for r in runs["items"]] == [run["run_id"]]
    elsewhere = await read_at(client, editor, "/api/v1/runs", 0, environment="production")
    assert elsewhere["items"] == []

    retired = await client.delete(path, headers=editor)
    assert retired.status_code == 200, retired.text
    shown = await read_at(client, editor, path, retired.json()["position"])
    assert shown["status"] == "retired" and shown["retired"] is True
    for method, route, body in (
        ("post", f"{path}/execute", {}),
        ("post", f"{path}/releases", {"revision": 2}),
        ("post", f"{path}/rollback", {}),
        ("delete", path, None),
    ):
        kwargs: dict[str, Any] = {"headers": editor} | ({} if body is None else {"json": body})
        refused = await getattr(client, method)(route, **kwargs)
        assert_error(refused, 409, "RESOURCE_CONFLICT")
    listed = await read_at(client, editor, BASE, retired.json()["position"], status="retired")
    assert [d["id"] for d in listed["items"]] == [deployment["id"]]


async def test_a_verifying_release_blocks_others_while_blue_serves(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    """This app runs no executor: the verification run stays queued, so the release stays
    verifying for as long as the test needs (its deadline is an hour away)."""
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    deployment = await deploy(client, editor, pipeline["id"], "production")
    path = f"{BASE}/{deployment['id']}"
    await revise(client, editor, pipeline)
    green = {"type": "blue-green", "verification_timeout": 3600, "verification_params": {"x": 1}}
    released = await client.post(f"{path}/releases", json={"strategy": green}, headers=editor)
    assert released.status_code == 202, released.text
    body = released.json()
    assert body["release"]["outcome"] == "verifying" and body["release"]["revision"] == 2
    assert body["status"] == "active" and body["active_release"] == 1
    run_id = body["release"]["run_id"]

    status = await read_at(client, editor, f"{path}/status", body["position"])
    assert status["status"] == "active" and status["active_release"] == 1
    verifying = status["verifying"]
    assert (verifying["release"], verifying["revision"], verifying["run_id"]) == (2, 2, run_id)
    assert verifying["deadline"] and verifying["elapsed_s"] >= 0
    verification = await read_at(client, editor, f"/api/v1/runs/{run_id}", body["position"])
    assert verification["params"] == {"x": 1} and verification["revision"] == 2

    for route, attempt in ((f"{path}/releases", {}), (f"{path}/rollback", {})):
        error = assert_error(
            await client.post(route, json=attempt, headers=editor), 409, "RESOURCE_CONFLICT"
        )
        assert "2" in error["message"], error
    blue = await client.post(f"{path}/execute", json={}, headers=editor)
    assert blue.status_code == 202, blue.text
    assert (blue.json()["revision"], blue.json()["release"]) == (1, 1)

    # Retiring fails the verifying release and stops its run.
    retired = await client.delete(path, headers=editor)
    assert retired.status_code == 200, retired.text
    releases = await read_at(client, editor, f"{path}/releases", retired.json()["position"])
    assert [r["outcome"] for r in releases["items"]] == ["active", "failed"]
    stopped = await read_at(client, editor, f"/api/v1/runs/{run_id}", retired.json()["position"])
    assert stopped["status"] == "cancelled", stopped


async def test_a_protected_environment_needs_an_admin_and_may_require_verification(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant_id, editor, root = await new_tenant(client, module_settings)
    admin = await new_user(client, root, tenant_id, "admin")
    policy_path = f"/api/v1/tenants/{tenant_id}/environments/production"
    strict = {"protected": True, "require_verification": True}
    by_editor = await client.put(policy_path, json=strict, headers=editor)
    assert_error(by_editor, 403, "PERMISSION_DENIED")
    bad_name = await client.put(
        f"/api/v1/tenants/{tenant_id}/environments/Prod!", json=strict, headers=admin
    )
    assert [d["field"] for d in assert_error(bad_name, 422, "VALIDATION_ERROR")["details"]] == [
        "environment"
    ]
    unknown = await client.put(policy_path, json={"locked": True}, headers=admin)
    assert_error(unknown, 422, "VALIDATION_ERROR")
    set_policy = await client.put(policy_path, json=strict, headers=admin)
    assert set_policy.status_code == 200, set_policy.text
    assert set_policy.json()["protected"] is True and set_policy.json()["position"]
    same = await client.put(policy_path, json=strict, headers=admin)
    assert same.status_code == 200 and same.json()["position"] is None  # nothing to record

    pipeline = await create_pipeline(client, editor, "alpha")
    create = {"pipeline_id": pipeline["id"], "environment": "production"}
    # Role first: an editor is refused even a body the policy would refuse.
    assert_error(await client.post(BASE, json=create, headers=editor), 403, "PERMISSION_DENIED")
    direct = await client.post(BASE, json=create, headers=admin)
    error = assert_error(direct, 422, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == ["strategy.type"]
    green = {"type": "blue-green", "verification_timeout": 3600}
    made = await deploy(client, admin, pipeline["id"], "production", strategy=green)
    assert made["status"] == "verifying" and made["release"]["outcome"] == "verifying"
    path = f"{BASE}/{made['id']}"
    for method, route, body in (
        ("post", f"{path}/releases", {}),
        ("post", f"{path}/rollback", {}),
        ("delete", path, None),
    ):
        kwargs: dict[str, Any] = {"headers": editor} | ({} if body is None else {"json": body})
        assert_error(await getattr(client, method)(route, **kwargs), 403, "PERMISSION_DENIED")
    # Other environments stay open to editors; the default policy lifts the protection.
    await deploy(client, editor, pipeline["id"], "staging")
    lifted = await client.put(policy_path, json={}, headers=admin)
    assert lifted.status_code == 200 and lifted.json()["protected"] is False, lifted.text
    retired = await client.delete(path, headers=editor)
    assert retired.status_code == 200, retired.text


async def test_deploy_from_the_pipeline_creates_then_releases(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    route = f"/api/v1/pipelines/{pipeline['id']}:deploy"
    first = await client.post(route, json={"environment": "staging"}, headers=editor)
    assert first.status_code == 201, first.text
    made = first.json()
    assert made["created"] is True and made["release"]["revision"] == 1
    assert first.headers["location"] == f"{BASE}/{made['id']}"
    await revise(client, editor, pipeline)
    again = await client.post(route, json={"environment": "staging"}, headers=editor)
    assert again.status_code == 201, again.text
    assert again.json()["created"] is False and again.json()["id"] == made["id"]
    assert (again.json()["release"]["release"], again.json()["release"]["revision"]) == (2, 2)
    for body, field in (
        ({"timezone": "Europe/Berlin"}, "timezone"),  # a timezone goes with a schedule
        ({"schedule": "0 3 * *"}, "schedule"),
        ({"schedule": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ):
        refused = await client.post(route, json={"environment": "staging", **body}, headers=editor)
        error = assert_error(refused, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == [field]
    history = await client.get(f"{BASE}/{made['id']}/history", headers=editor)
    assert len(history.json()["items"]) == 3  # nothing released by the refused ones
    scheduled = await client.post(
        route,
        json={"environment": "staging", "schedule": "0 3 * * *", "timezone": "Europe/Berlin"},
        headers=editor,
    )
    assert scheduled.status_code == 201, scheduled.text
    job = scheduled.json()["job"]
    assert (job["name"], job["cron_expr"], job["timezone"]) == (
        "alpha@staging",
        "0 3 * * *",
        "Europe/Berlin",
    )
    again = await client.post(
        route, json={"environment": "staging", "schedule": "30 4 * * *"}, headers=editor
    )
    assert again.status_code == 201, again.text
    assert (again.json()["job"]["id"], again.json()["job"]["cron_expr"]) == (
        job["id"],
        "30 4 * * *",
    )
    assert again.json()["job"]["timezone"] == "UTC" and again.json()["job"]["version"] == 2
    shown = await client.get(
        f"/api/v1/scheduler/jobs/{job['id']}",
        params={"min_position": again.json()["job"]["position"]},
        headers=editor,
    )
    assert shown.json()["target"]["deployment_id"] == made["id"]
    missing = await client.post(
        f"/api/v1/pipelines/{BASE_ID}:deploy", json={"environment": "staging"}, headers=editor
    )
    assert_error(missing, 404, "RESOURCE_NOT_FOUND")


async def test_another_tenants_deployment_is_not_found_on_every_route(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, admin = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    deployment = await deploy(client, editor, pipeline["id"], "staging")
    _, stranger = await make_tenant_user(client, admin, unique("other"), "admin")
    path = f"{BASE}/{deployment['id']}"
    for method, route, body in (
        ("get", path, None),
        ("get", f"{path}/releases", None),
        ("get", f"{path}/status", None),
        ("get", f"{path}/history", None),
        ("post", f"{path}/releases", {}),
        ("post", f"{path}/execute", {}),
        ("post", f"{path}/rollback", {}),
        ("delete", path, None),
    ):
        kwargs: dict[str, Any] = {"headers": stranger} | ({} if body is None else {"json": body})
        response = await getattr(client, method)(route, **kwargs)
        assert_error(response, 404, "RESOURCE_NOT_FOUND")
    # Nor may a stranger deploy the tenant's pipeline, or see it in a list.
    foreign = await client.post(
        BASE, json={"pipeline_id": pipeline["id"], "environment": "prod"}, headers=stranger
    )
    assert_error(foreign, 404, "RESOURCE_NOT_FOUND")
    listed = await read_at(client, stranger, BASE, deployment["position"])
    assert listed["items"] == []
    still = await read_at(client, editor, path, deployment["position"])
    assert still["status"] == "active" and still["version"] == deployment["version"]


async def test_every_role_reads_editors_write_operators_execute(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant_id, editor, admin = await new_tenant(client, module_settings)
    viewer = await new_user(client, admin, tenant_id, "viewer")
    operator = await new_user(client, admin, tenant_id, "operator")
    pipeline = await create_pipeline(client, editor, "alpha")
    deployment = await deploy(client, editor, pipeline["id"], "staging")
    path = f"{BASE}/{deployment['id']}"
    for route in (path, f"{path}/releases", f"{path}/status", BASE):
        assert (await read_at(client, viewer, route, deployment["position"])) is not None
    history = await client.get(f"{path}/history", headers=viewer)  # the event store's
    assert history.status_code == 200 and history.json()["items"], history.text
    writes = (
        ("post", BASE, {"pipeline_id": pipeline["id"], "environment": "prod"}),
        ("post", f"{path}/releases", {}),
        ("post", f"{path}/rollback", {}),
        ("delete", path, None),
    )
    for who in (viewer, operator):
        for method, route, body in writes:
            kwargs: dict[str, Any] = {"headers": who} | ({} if body is None else {"json": body})
            assert_error(await getattr(client, method)(route, **kwargs), 403, "PERMISSION_DENIED")
    refused = await client.post(f"{path}/execute", json={}, headers=viewer)
    assert_error(refused, 403, "PERMISSION_DENIED")
    executed = await client.post(f"{path}/execute", json={}, headers=operator)
    assert executed.status_code == 202, executed.text


async def test_bad_bodies_name_their_fields(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")

    async def fields(route: str, body: Any) -> list[str]:
        response = await client.post(route, json=body, headers=editor)
        error = assert_error(response, 422, "VALIDATION_ERROR")
        return [str(d.get("field")) for d in error["details"]]

    create = {"pipeline_id": pipeline["id"], "environment": "staging"}
    assert "environment" in " ".join(await fields(BASE, {**create, "environment": "Prod!"}))
    assert "colour" in " ".join(await fields(BASE, {**create, "colour": "blue"}))
    assert "pipeline_id" in " ".join(await fields(BASE, {**create, "pipeline_id": "nope"}))
    assert "variables" in " ".join(await fields(BASE, {**create, "variables": [1]}))
    no_timeout = {**create, "strategy": {"type": "blue-green"}}
    assert await fields(BASE, no_timeout) == ["strategy.verification_timeout"]
    too_long = {**create, "strategy": {"type": "blue-green", "verification_timeout": 86_401}}
    assert await fields(BASE, too_long) == ["strategy.verification_timeout"]
    bad_label = {**create, "labels": {"no spaces": "x"}}
    assert await fields(BASE, bad_label) == ["labels.no spaces"]

    deployment = await deploy(client, editor, pipeline["id"], "staging")
    path = f"{BASE}/{deployment['id']}"
    assert "revision" in " ".join(await fields(f"{path}/releases", {"revision": 0}))
    assert "to_release" in " ".join(await fields(f"{path}/rollback", {"to_release": "x"}))
    assert "params" in " ".join(await fields(f"{path}/execute", {"params": "x"}))
    # Nothing was made by the refused creates.
    listed = await read_at(client, editor, BASE, deployment["position"])
    assert [d["id"] for d in listed["items"]] == [deployment["id"]]


async def test_max_deployments_is_enforced_and_shown_in_usage(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant_id, editor, admin = await new_tenant(client, module_settings)
    limited = await client.put(
        f"/api/v1/tenants/{tenant_id}/quotas", json={"max_deployments": 1}, headers=admin
    )
    assert limited.status_code == 200, limited.text
    pipeline = await create_pipeline(client, editor, "alpha")
    first = await deploy(client, editor, pipeline["id"], "staging")
    over = await client.post(
        BASE, json={"pipeline_id": pipeline["id"], "environment": "production"}, headers=editor
    )
    assert_error(over, 409, "QUOTA_EXCEEDED")
    # The same projection keeps the count: once the deployment shows, the usage does.
    await read_at(client, editor, f"{BASE}/{first['id']}", first["position"])
    usage = await client.get(f"/api/v1/tenants/{tenant_id}/usage", headers=admin)
    assert usage.status_code == 200, usage.text
    assert usage.json()["quotas"]["max_deployments"]["used"] == 1
    retired = await client.delete(f"{BASE}/{first['id']}", headers=editor)
    assert retired.status_code == 200, retired.text
    await deploy(client, editor, pipeline["id"], "production")


async def test_blue_green_release_verified_by_a_real_run(settings: Settings) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        _, editor, _ = await new_tenant(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "verified", [step("emit", "Test.emit", count=2)]
        )
        deployment = await deploy(client, editor, pipeline_id, "production")
        path = f"{BASE}/{deployment['id']}"
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "verified", "steps": [step("emit", "Test.emit", count=3)]},
            headers=editor,
        )
        assert revised.status_code == 200, revised.text
        green = {"type": "blue-green", "verification_timeout": 60}
        released = await client.post(
            f"{path}/releases", json={"revision": 2, "strategy": green}, headers=editor
        )
        assert released.status_code == 202, released.text
        release = released.json()["release"]
        assert release["outcome"] == "verifying" and release["run_id"]
        assert released.json()["active_release"] == 1  # blue serves while green verifies
        status = await status_when(
            client, editor, path, lambda s: s["verifying"] is None and s["active_release"] == 2
        )
        assert status["status"] == "active" and status["active_revision"] == 2
        recent = status["recent_releases"]
        assert [(r["release"], r["outcome"]) for r in recent] == [(2, "active"), (1, "superseded")]
        assert recent[0]["run_id"] == release["run_id"]
        run = await client.get(f"/api/v1/runs/{release['run_id']}", headers=editor)
        assert run.json()["status"] == "succeeded" and run.json()["revision"] == 2

        executed = await client.post(f"{path}/execute", json={"wait": True}, headers=editor)
        assert executed.status_code == 200, executed.text
        result = executed.json()
        assert result["success"] is True and (result["revision"], result["release"]) == (2, 2)
        assert result["context"]["steps"]["emit"]["records_out"] == 3

        # A green that fails its verification leaves blue (release 2) active.
        broken = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "verified", "steps": [step("boom", "Test.fail", retryable=False)]},
            headers=editor,
        )
        assert broken.status_code == 200, broken.text
        failing = await client.post(
            f"{path}/releases", json={"revision": 3, "strategy": green}, headers=editor
        )
        assert failing.status_code == 202, failing.text
        status = await status_when(
            client,
            editor,
            path,
            lambda s: (
                (s["recent_releases"][0]["release"], s["recent_releases"][0]["outcome"])
                == (3, "failed")
            ),
        )
        assert status["status"] == "active" and status["active_release"] == 2
        assert [(r["release"], r["outcome"]) for r in status["recent_releases"][:2]] == [
            (3, "failed"),
            (2, "active"),
        ]
