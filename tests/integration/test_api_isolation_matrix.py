"""Tenant isolation, generated over the route table: a new route cannot skip it.

For every route with a path parameter, a principal of tenant B asks for tenant A's
resource; the answer must be indistinguishable from asking for one that does not exist
(for reads: 404), and A's resources must be unchanged afterwards. Every list shows B
nothing of A's. A path parameter this test does not know fails the test, so whoever adds
a route also says which of A's resources it addresses."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    running_app,
    visible,
)
from tests.integration.run_support import EXECUTING, executing, make_pipeline, run_to_end, step

_PARAM = re.compile(r"\{(\w+):(\w+)\}")

# A valid body per write route, so that the request reaches the ownership check instead
# of stopping at validation (which would prove nothing). Keyed by (method, path).
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/v1/pipelines/{pipeline_id:uuid}"): pipeline_body("stolen"),
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/clone"): {"name": "stolen"},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/rollback"): {"revision": 1},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/validate"): None,
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/regenerate"): {"instructions": "remove step x"},
    ("PUT", "/api/v1/tenants/{tenant_id:uuid}"): {"description": "stolen"},
    ("PUT", "/api/v1/tenants/{tenant_id:uuid}/quotas"): {"max_pipelines": 1},
    ("POST", "/api/v1/tenants/{tenant_id:uuid}/namespaces"): {"namespace": "stolen"},
    ("PUT", "/api/v1/users/{user_id:uuid}"): {"active": False},
    ("POST", "/api/v1/users/{user_id:uuid}/password"): {"new_password": "a-stolen-passphrase-42"},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/runs"): {"params": {"stolen": True}},
    ("POST", "/api/v1/runs/{run_id:uuid}/retry"): {"from_failed_step": False},
    ("POST", "/api/v1/deployments/{deployment_id:uuid}/releases"): {"revision": 1},
    ("POST", "/api/v1/deployments/{deployment_id:uuid}/execute"): {"params": {"stolen": True}},
    ("POST", "/api/v1/deployments/{deployment_id:uuid}/rollback"): {},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/deploy"): {"environment": "a-production"},
    ("PUT", "/api/v1/tenants/{tenant_id:uuid}/environments/{environment:str}"): {
        "protected": False
    },
    ("PUT", "/api/v1/scheduler/jobs/{job_id:uuid}"): {
        "name": "stolen",
        "target": {"pipeline_id": str(uuid4())},
        "cron_expr": "* * * * *",
    },
    ("POST", "/api/v1/scheduler/jobs/{job_id:uuid}/trigger"): {"params": {"stolen": True}},
    ("POST", "/api/v1/scheduler/jobs/{job_id:uuid}/backfill"): {
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-02T00:00:00Z",
    },
    ("PATCH", "/api/v1/webhooks/{webhook_id:uuid}"): {"description": "stolen"},
    ("PUT", "/api/v1/deployments/{deployment_id:uuid}/triggers"): {"triggers": []},
    ("PUT", "/api/v1/secrets/{secret_name:str}"): {"value": "a-stolen-value"},
    ("PUT", "/api/v1/connections/{connection_name:str}"): {
        "config": {"base_url": "https://stolen.example"}
    },
}

# Routes over resources that belong to no tenant (the plugin catalog): nothing to isolate.
GLOBAL_PREFIXES = ("/api/v1/plugins", "/api/v1/connectors")


@dataclass
class TenantA:
    """What tenant A owns, by the path parameter that addresses it."""

    values: dict[str, str] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    headers: dict[str, str] = field(default_factory=dict)


def routes_with_params(app: Litestar) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/v1/"):
            continue
        if route.path.startswith(GLOBAL_PREFIXES) or not _PARAM.search(route.path):
            continue
        found.extend((method, route.path) for method in sorted(route.methods - {"HEAD", "OPTIONS"}))
    return found


def list_routes(app: Litestar) -> list[str]:
    return sorted(
        route.path
        for route in app.routes
        if isinstance(route, HTTPRoute)
        and route.path.startswith("/api/v1/")
        and not route.path.startswith(GLOBAL_PREFIXES)
        and not _PARAM.search(route.path)
        and "GET" in route.methods
        and not route.path.endswith("/stream")  # the SSE feed: tests/integration/test_api_feed.py
    )


def fill(path: str, value_of: Callable[[str, str], str]) -> str:
    return _PARAM.sub(lambda m: value_of(m.group(1), m.group(2)), path)


def random_value(name: str, kind: str) -> str:
    return "999999" if kind == "int" else (str(uuid4()) if kind == "uuid" else f"x{uuid4().hex}")


async def seed_tenant_a(client: AsyncTestClient, admin: dict[str, str]) -> TenantA:
    tenant_id, editor = await make_tenant_user(client, admin, "tenant-a", "admin")
    namespace = await client.post(
        f"/api/v1/tenants/{tenant_id}/namespaces", json={"namespace": "a-ns"}, headers=editor
    )
    assert namespace.status_code == 201, namespace.text
    user_id = (await client.get("/api/v1/auth/me", headers=editor)).json()["id"]
    pipeline = await create_pipeline(client, editor, "a-secret-pipeline", namespace="a-ns")
    key = await client.post(
        "/api/v1/api-keys", json={"name": "a-key", "roles": ["viewer"]}, headers=editor
    )
    assert key.status_code == 201, key.text
    # A finished run (of Test plugins, which the executor role runs): its id addresses
    # every {run_id} route, and it fills A's run lists, statistics and exports.
    runner = await make_pipeline(
        client, editor, "a-runner", [step("a", "Test.emit"), step("b", "Test.emit", "a")]
    )
    run = await run_to_end(client, editor, runner)
    assert run["status"] == "succeeded", run
    deployment = await client.post(
        "/api/v1/deployments",
        json={"pipeline_id": pipeline["id"], "environment": "a-production"},
        headers=editor,
    )
    assert deployment.status_code == 201, deployment.text
    shown = f"/api/v1/deployments/{deployment.json()['id']}"
    await visible(client, editor, shown, deployment.json()["position"])  # the snapshot reads it
    job = await client.post(
        "/api/v1/scheduler/jobs",
        json={"name": "a-job", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"},
        headers=editor,
    )
    assert job.status_code == 201, job.text
    await visible(
        client, editor, f"/api/v1/scheduler/jobs/{job.json()['id']}", job.json()["position"]
    )
    # A public address literal: the SSRF guard lets it pass without DNS.
    webhook = await client.post(
        "/api/v1/webhooks",
        json={"url": "https://93.184.215.14/a-hook", "events": ["norn.*"]},
        headers=editor,
    )
    assert webhook.status_code == 201, webhook.text
    webhook_path = f"/api/v1/webhooks/{webhook.json()['id']}"
    await visible(client, editor, webhook_path, webhook.json()["position"])
    ping = await client.post(f"{webhook_path}:ping", headers=editor)
    assert ping.status_code == 202, ping.text
    secret = await client.post(
        "/api/v1/secrets", json={"name": "a-db-password", "value": "a-value"}, headers=editor
    )
    assert secret.status_code == 201, secret.text
    await visible(client, editor, "/api/v1/secrets/a-db-password", secret.json()["position"])
    connection = await client.post(
        "/api/v1/connections",
        json={
            "name": "a-warehouse",
            "type": "postgres",
            "config": {
                "host": "a-db.example.com",
                "database": "a-dw",
                "user": "a-user",
                "password": {"secret": "a-db-password"},
            },
        },
        headers=editor,
    )
    assert connection.status_code == 201, connection.text
    await visible(client, editor, "/api/v1/connections/a-warehouse", connection.json()["position"])
    a = TenantA(headers=editor)
    a.values = {
        "webhook_id": webhook.json()["id"],
        "delivery_id": ping.json()["delivery_id"],
        "tenant_id": tenant_id,
        "pipeline_id": pipeline["id"],
        "revision": "1",
        "key_id": key.json()["id"],
        "namespace": "a-ns",
        "user_id": user_id,
        "run_id": run["id"],
        "deployment_id": deployment.json()["id"],
        "environment": "a-production",
        "job_id": job.json()["id"],
        "secret_name": "a-db-password",
        "connection_name": "a-warehouse",
    }
    a.ids = {
        tenant_id,
        pipeline["id"],
        key.json()["id"],
        key.json()["prefix"],
        user_id,
        runner,
        run["id"],
        deployment.json()["id"],
        job.json()["id"],
        webhook.json()["id"],
        secret.json()["id"],
        "a-db-password",
        connection.json()["id"],
        "a-warehouse",
        "a-db.example.com",
    }
    return a


async def snapshot(client: AsyncTestClient, admin: dict[str, str], a: TenantA) -> Any:
    """What A's resources look like, read by the platform admin."""
    acting = {**admin, "X-Tenant-ID": a.values["tenant_id"]}
    pipeline = await client.get(f"/api/v1/pipelines/{a.values['pipeline_id']}", headers=acting)
    tenant = await client.get(f"/api/v1/tenants/{a.values['tenant_id']}", headers=admin)
    user = await client.get(f"/api/v1/users/{a.values['user_id']}", headers=admin)
    run = await client.get(f"/api/v1/runs/{a.values['run_id']}", headers=acting)
    runs = await client.get("/api/v1/runs", headers=acting)  # no run queued by B's retry
    deployment = await client.get(
        f"/api/v1/deployments/{a.values['deployment_id']}/releases", headers=acting
    )
    job = await client.get(f"/api/v1/scheduler/jobs/{a.values['job_id']}/history", headers=acting)
    return [(r.status_code, r.json()) for r in (pipeline, tenant, user, run, runs, deployment, job)]


async def test_another_tenants_ids_are_indistinguishable_from_missing_ones(
    settings: Settings,
) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        a = await seed_tenant_a(client, root)
        _, b = await make_tenant_user(client, root, "tenant-b", "admin")
        before = await snapshot(client, root, a)
        routes = routes_with_params(client.app)
        assert routes, "the route table has no parameterised routes?"
        run_routes = {
            f"{m} {p.removeprefix('/api/v1/runs/{run_id:uuid}')}"
            for m, p in routes
            if "{run_id" in p
        }
        assert run_routes >= {
            "GET ",
            "GET /status",
            "GET /logs",
            "GET /visualize",
            "POST /cancel",
            "POST /retry",
        }, run_routes

        def a_value(name: str, kind: str) -> str:
            assert name in a.values, f"isolation matrix: which of A's resources is {{{name}}}?"
            return a.values[name]

        problems = []
        for method, path in routes:
            body = BODIES.get((method, path))
            theirs = await client.request(method, fill(path, a_value), json=body, headers=b)
            missing = await client.request(method, fill(path, random_value), json=body, headers=b)
            seen = (theirs.status_code, _code(theirs))
            if seen != (missing.status_code, _code(missing)) or theirs.status_code < 400:
                problems.append(f"{method} {path}: A's id {seen}, a missing id {_code(missing)}")
            elif missing.status_code in (400, 422):
                problems.append(f"{method} {path}: refused as invalid; add a body to BODIES")
            elif method == "GET" and theirs.status_code != 404:
                problems.append(f"GET {path}: {theirs.status_code}, expected 404")
        assert not problems, "\n".join(problems)
        assert await snapshot(client, root, a) == before


async def test_no_list_shows_another_tenants_resources(settings: Settings) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        a = await seed_tenant_a(client, root)
        _, b = await make_tenant_user(client, root, "tenant-b", "admin")
        lists = list_routes(client.app)
        assert "/api/v1/pipelines" in lists
        for path in lists:
            response = await client.get(path, headers=b)
            if response.status_code == 403:  # a platform-only list: B sees nothing at all
                continue
            assert response.status_code == 200, (path, response.text)
            leaked = {ident for ident in a.ids if ident in response.text}
            assert not leaked, f"{path} shows tenant A's {leaked}"
        # Lists that count rather than name: B's are empty where A's are not.
        for headers, runs in ((a.headers, 1), (b, 0)):
            statistics = await client.get("/api/v1/runs/statistics", headers=headers)
            assert statistics.json()["totals"]["total"] == runs, statistics.text
            assert len(statistics.json()["per_pipeline"]) == runs
            export = await client.get("/api/v1/runs/export", headers=headers)
            assert len(export.text.splitlines()) == runs
            export = await client.get("/api/v1/runs/export?format=csv", headers=headers)
            assert len(export.text.splitlines()) == 1 + runs  # the header, then A's run


def _code(response: Any) -> str | None:
    try:
        return response.json()["error"]["code"]
    except Exception:
        return None
