"""Suspended and deleted tenants, generated over the route table: a new write route
cannot skip the check.

While a tenant is suspended, every route whose declared permission is a tenant write
(application.authorization.TENANT_WRITES) refuses its principals (users and API keys)
with 403 PERMISSION_DENIED saying the tenant is suspended, and nothing is stored; every
other route they may use answers as it did before. Reactivating restores the writes: the
very same requests then succeed, which proves the refusals came from the suspension.
A deleted tenant's users and keys no longer authenticate, but its events stay readable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from application.authorization import ROLE_PERMISSIONS, TENANT_WRITES, Permission
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    running_app,
    visible,
)
from tests.integration.test_api_isolation_matrix import fill

Headers = dict[str, str]
Values = dict[str, str]
PASSWORD = "correct-horse-battery-staple"

# A valid body per write route (a function of the seeded ids), so that after
# reactivation the same request succeeds. Every tenant-write route must be listed here.
WRITE_BODIES: dict[tuple[str, str], Callable[[Values], Any]] = {
    ("PUT", "/api/v1/tenants/{tenant_id:uuid}"): lambda v: {"description": "changed"},
    ("POST", "/api/v1/tenants/{tenant_id:uuid}/namespaces"): lambda v: {"namespace": "new-ns"},
    ("DELETE", "/api/v1/tenants/{tenant_id:uuid}/namespaces/{namespace:str}"): lambda v: None,
    ("POST", "/api/v1/users"): lambda v: {
        "username": "newcomer",
        "password": PASSWORD,
        "tenant_id": v["tenant_id"],
        "roles": ["viewer"],
    },
    ("PUT", "/api/v1/users/{user_id:uuid}"): lambda v: {"active": False},
    ("DELETE", "/api/v1/users/{user_id:uuid}"): lambda v: None,
    ("POST", "/api/v1/api-keys"): lambda v: {"name": "new-key", "roles": ["viewer"]},
    ("DELETE", "/api/v1/api-keys/{key_id:uuid}"): lambda v: None,
    ("POST", "/api/v1/pipelines"): lambda v: pipeline_body("new-pipeline"),
    ("PUT", "/api/v1/pipelines/{pipeline_id:uuid}"): lambda v: pipeline_body("renamed"),
    ("DELETE", "/api/v1/pipelines/{pipeline_id:uuid}"): lambda v: None,
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/rollback"): lambda v: {"revision": 1},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/clone"): lambda v: {"name": "cloned"},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/runs"): lambda v: {"params": {"n": 1}},
    ("POST", "/api/v1/pipelines/execute"): lambda v: {"pipeline_name": "nightly"},
    ("POST", "/api/v1/runs/{run_id:uuid}/cancel"): lambda v: None,
    ("POST", "/api/v1/runs/{run_id:uuid}/retry"): lambda v: {"from_failed_step": False},
    # Deployments are of another pipeline than {pipeline_id}, which DELETE removes.
    ("POST", "/api/v1/deployments"): lambda v: {
        "pipeline_id": v["deployed_pipeline_id"],
        "environment": "production",
    },
    # Revision 2 is active: whichever of release and rollback comes first, the other
    # still has an earlier release to go to.
    ("POST", "/api/v1/deployments/{deployment_id:uuid}/releases"): lambda v: {"revision": 2},
    ("POST", "/api/v1/deployments/{deployment_id:uuid}/rollback"): lambda v: {},
    ("POST", "/api/v1/deployments/{deployment_id:uuid}/execute"): lambda v: {"params": {"n": 1}},
    ("DELETE", "/api/v1/deployments/{deployment_id:uuid}"): lambda v: None,
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/deploy"): lambda v: {"environment": "staging"},
    ("PUT", "/api/v1/tenants/{tenant_id:uuid}/environments/{environment:str}"): lambda v: {
        "protected": True
    },
    # Jobs target the pipeline DELETE does not remove.
    ("POST", "/api/v1/scheduler/jobs"): lambda v: {
        "name": "new-job",
        "target": {"pipeline_id": v["deployed_pipeline_id"]},
        "cron_expr": "@daily",
    },
    ("PUT", "/api/v1/scheduler/jobs/{job_id:uuid}"): lambda v: {
        "name": "renamed-job",
        "target": {"deployment_id": v["deployment_id"]},
        "cron_expr": "@hourly",
    },
    ("DELETE", "/api/v1/scheduler/jobs/{job_id:uuid}"): lambda v: None,
    ("POST", "/api/v1/scheduler/jobs/{job_id:uuid}/enable"): lambda v: None,
    ("POST", "/api/v1/scheduler/jobs/{job_id:uuid}/disable"): lambda v: None,
    ("POST", "/api/v1/scheduler/jobs/{job_id:uuid}/trigger"): lambda v: {"params": {"n": 1}},
    ("POST", "/api/v1/scheduler/jobs/{job_id:uuid}/backfill"): lambda v: {
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-03T00:00:00Z",
    },
    # A public address literal: the SSRF guard lets it pass without DNS.
    ("POST", "/api/v1/webhooks"): lambda v: {
        "url": "https://93.184.215.14/new-hook",
        "events": ["norn.*"],
    },
    ("PATCH", "/api/v1/webhooks/{webhook_id:uuid}"): lambda v: {"description": "changed"},
    ("PUT", "/api/v1/deployments/{deployment_id:uuid}/triggers"): lambda v: {
        "triggers": [{"on": "norn.run.succeeded"}]
    },
    ("DELETE", "/api/v1/webhooks/{webhook_id:uuid}"): lambda v: None,
    ("POST", "/api/v1/webhooks/{webhook_id:uuid}/ping"): lambda v: None,
    ("POST", "/api/v1/webhooks/{webhook_id:uuid}/rotate-secret"): lambda v: None,
    ("POST", "/api/v1/webhooks/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/redeliver"): (
        lambda v: None
    ),
    ("POST", "/api/v1/secrets"): lambda v: {"name": "new-secret", "value": "a-new-value"},
    ("PUT", "/api/v1/secrets/{secret_name:str}"): lambda v: {"value": "a-newer-value"},
    ("DELETE", "/api/v1/secrets/{secret_name:str}"): lambda v: None,
    ("POST", "/api/v1/connections"): lambda v: {
        "name": "new-connection",
        "type": "http",
        "config": {"base_url": "https://api.example.com", "headers": {}},
    },
    ("PUT", "/api/v1/connections/{connection_name:str}"): lambda v: {
        "config": {**WAREHOUSE, "port": 5433}
    },
    ("DELETE", "/api/v1/connections/{connection_name:str}"): lambda v: None,
}
# The seeded connection: references a secret no route deletes.
WAREHOUSE = {
    "host": "db.example.com",
    "database": "dw",
    "user": "u",
    "password": {"secret": "old-token"},
}

# Routes that address another seeded resource than the one their parameter names.
ROUTE_VALUES: dict[tuple[str, str], dict[str, str]] = {
    # Cancel needs a run still queued, retry one that has ended.
    ("POST", "/api/v1/runs/{run_id:uuid}/retry"): {"run_id": "ended_run_id"},
    # A deploy releases to the seeded deployment, of the pipeline DELETE does not remove.
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/deploy"): {
        "pipeline_id": "deployed_pipeline_id"
    },
}

# Bodies for the non-GET routes that only read (validation).
READ_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/pipelines/validate"): pipeline_body("checked"),
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/validate"): None,
    ("POST", "/api/v1/pipelines/generate"): {"description": "read a.csv, write b.csv"},
    ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/regenerate"): {"instructions": "write to b.csv"},
}

# Not requested: the SSE feed never ends (tests/integration/test_api_feed.py).
ENDLESS = {"/api/v1/events/stream"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    permission: Permission


def routes_by_permission(app: Litestar) -> list[Route]:
    """Every /api/v1 route of the app that declares a permission of the table."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/v1/"):
            continue
        for handler in route.route_handlers:
            permission = handler.opt.get("permission")
            if not isinstance(permission, Permission):
                continue  # public, or any authenticated caller (login, me, logout, password)
            for method in sorted(handler.http_methods - {"HEAD", "OPTIONS"}):
                found.append(Route(method, route.path, permission))
    return found


def write_routes(app: Litestar) -> list[Route]:
    """The tenant writes, DELETEs last so that each request finds what it needs."""
    writes = [r for r in routes_by_permission(app) if r.permission in TENANT_WRITES]
    return sorted(writes, key=lambda r: r.method == "DELETE")


def other_routes(app: Litestar) -> list[Route]:
    """Every route that is not a tenant write: reads, validation, and the platform's own
    routes (which a tenant's principals may not use, suspended or not)."""
    return [
        r
        for r in routes_by_permission(app)
        if r.permission not in TENANT_WRITES and r.path not in ENDLESS
    ]


@dataclass
class Tenant:
    id: str
    admin: Headers
    key: Headers
    values: Values


async def seed(client: AsyncTestClient, root: Headers) -> Tenant:
    """A tenant with an admin, an admin API key, and one of each thing a write route
    addresses: a pipeline with two revisions, an empty namespace, a user, a key."""
    tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
    for namespace in ("prod", "spare"):
        added = await client.post(
            f"/api/v1/tenants/{tenant_id}/namespaces", json={"namespace": namespace}, headers=admin
        )
        assert added.status_code == 201, added.text
    pipeline = await create_pipeline(client, admin, "nightly", namespace="prod")
    revised = await client.put(
        f"/api/v1/pipelines/{pipeline['id']}",
        json=pipeline_body("nightly", namespace="prod", description="v2"),
        headers=admin,
    )
    assert revised.status_code == 200, revised.text
    user = await client.post(
        "/api/v1/users",
        json={"username": "victim", "password": PASSWORD, "tenant_id": tenant_id},
        headers=admin,
    )
    assert user.status_code == 201, user.text
    runs = f"/api/v1/pipelines/{pipeline['id']}/runs"
    queued, ended = [(await client.post(runs, json={}, headers=admin)).json() for _ in range(2)]
    cancelled = await client.post(f"/api/v1/runs/{ended['run_id']}/cancel", headers=admin)
    assert cancelled.status_code == 202, cancelled.text
    victim_key = await client.post(
        "/api/v1/api-keys", json={"name": "victim-key", "roles": ["viewer"]}, headers=admin
    )
    assert victim_key.status_code == 201, victim_key.text
    own_key = await client.post(
        "/api/v1/api-keys", json={"name": "robot", "roles": ["admin"]}, headers=admin
    )
    assert own_key.status_code == 201, own_key.text
    deployed = await create_pipeline(client, admin, "deployed")
    revised_deployed = await client.put(
        f"/api/v1/pipelines/{deployed['id']}",
        json=pipeline_body("deployed", description="v2"),
        headers=admin,
    )
    assert revised_deployed.status_code == 200, revised_deployed.text
    deployment = await client.post(
        "/api/v1/deployments",
        json={"pipeline_id": deployed["id"], "environment": "staging", "revision": 1},
        headers=admin,
    )
    assert deployment.status_code == 201, deployment.text
    deployment_path = f"/api/v1/deployments/{deployment.json()['id']}"
    released = await client.post(f"{deployment_path}/releases", json={"revision": 2}, headers=admin)
    assert released.status_code == 201, released.text
    job = await client.post(
        "/api/v1/scheduler/jobs",
        json={
            "name": "nightly-job",
            "target": {"pipeline_id": deployed["id"]},
            "cron_expr": "@daily",
        },
        headers=admin,
    )
    assert job.status_code == 201, job.text
    webhook = await client.post(
        "/api/v1/webhooks",
        json={"url": "https://93.184.215.14/hook", "events": ["norn.*"]},
        headers=admin,
    )
    assert webhook.status_code == 201, webhook.text
    ping = await client.post(f"/api/v1/webhooks/{webhook.json()['id']}:ping", headers=admin)
    assert ping.status_code == 202, ping.text
    secrets = [
        await client.post("/api/v1/secrets", json={"name": name, "value": "a-value"}, headers=admin)
        for name in ("db-password", "old-token")
    ]
    assert all(made.status_code == 201 for made in secrets), [m.text for m in secrets]
    connection = await client.post(
        "/api/v1/connections",
        json={"name": "warehouse", "type": "postgres", "config": WAREHOUSE},
        headers=admin,
    )
    assert connection.status_code == 201, connection.text
    # Every read route below reads a read model: each must have what was just written.
    for path, position in (
        (f"/api/v1/scheduler/jobs/{job.json()['id']}", job.json()["position"]),
        (deployment_path, released.json()["position"]),
        (f"/api/v1/tenants/{tenant_id}", added.json()["position"]),
        (f"/api/v1/pipelines/{pipeline['id']}", revised.json()["position"]),
        (f"/api/v1/users/{user.json()['id']}", user.json()["position"]),
        (f"/api/v1/runs/{ended['run_id']}", cancelled.json()["position"]),
        (f"/api/v1/api-keys/{own_key.json()['id']}", own_key.json()["position"]),
        (f"/api/v1/webhooks/{webhook.json()['id']}", webhook.json()["position"]),
        ("/api/v1/secrets/old-token", secrets[1].json()["position"]),
        ("/api/v1/connections/warehouse", connection.json()["position"]),
    ):
        await visible(client, admin, path, position)
    values = {
        "tenant_id": tenant_id,
        "pipeline_id": pipeline["id"],
        "revision": "1",
        "namespace": "spare",
        "user_id": user.json()["id"],
        "key_id": victim_key.json()["id"],
        "run_id": queued["run_id"],
        "ended_run_id": ended["run_id"],
        "deployed_pipeline_id": deployed["id"],
        "deployment_id": deployment.json()["id"],
        "job_id": job.json()["id"],
        "webhook_id": webhook.json()["id"],
        "delivery_id": ping.json()["delivery_id"],
        "secret_name": "db-password",
        "connection_name": "warehouse",
        "environment": "qa",
        "plugin_type": "Input",
        "name": "file",
    }
    return Tenant(tenant_id, admin, {"X-API-Key": own_key.json()["key"]}, values)


def value_of(values: Values) -> Callable[[str, str], str]:
    def lookup(name: str, kind: str) -> str:
        assert name in values, f"suspension test: which seeded resource is {{{name}}}?"
        return values[name]

    return lookup


async def send(client: AsyncTestClient, route: Route, tenant: Tenant, headers: Headers) -> Any:
    key = (route.method, route.path)
    if route.permission in TENANT_WRITES:
        assert key in WRITE_BODIES, f"suspension test: add a body for {key} to WRITE_BODIES"
        body = WRITE_BODIES[key](tenant.values)
    else:
        body = READ_BODIES.get(key)
    values = {
        **tenant.values,
        **{k: tenant.values[v] for k, v in ROUTE_VALUES.get(key, {}).items()},
    }
    url = fill(route.path, value_of(values))
    return await client.request(route.method, url, json=body, headers=headers)


def error_of(response: Any) -> dict[str, Any]:
    """The error of a refusal; {} for anything else (a success may have no body)."""
    try:
        return dict(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return {}


def stored_events(settings: Settings) -> int:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM norn_events").fetchone()
    assert row is not None
    return int(row[0])


async def set_status(
    client: AsyncTestClient, root: Headers, tenant_id: str, status: str
) -> dict[str, Any]:
    response = await client.put(
        f"/api/v1/tenants/{tenant_id}",
        json={"status": status, "status_reason": "invoice unpaid" if status != "active" else ""},
        headers=root,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == status
    return dict(response.json())


async def test_a_suspended_tenant_reads_but_every_write_route_refuses_it(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant = await seed(client, root)
        writes, others = write_routes(client.app), other_routes(client.app)
        assert {(r.method, r.path) for r in writes} == set(WRITE_BODIES), (
            "WRITE_BODIES and the route table disagree"
        )
        principals = {"tenant admin": tenant.admin, "API key": tenant.key}
        answers_while_active = {
            (who, r.method, r.path): (await send(client, r, tenant, headers)).status_code
            for who, headers in principals.items()
            for r in others
        }
        # Every other route an admin may use succeeds (every list included), so "answers
        # as before" below means "still answers 200"; the rest are the platform's (403).
        for (who, method, path), status in answers_while_active.items():
            route = next(r for r in others if (r.method, r.path) == (method, path))
            expected = 200 if route.permission in ROLE_PERMISSIONS["admin"] else 403
            assert status == expected, (who, method, path, status)

        suspended = await set_status(client, root, tenant.id, "suspended")
        events_before = stored_events(settings)
        problems = []
        for who, headers in principals.items():
            for route in writes:
                response = await send(client, route, tenant, headers)
                error = error_of(response)
                if response.status_code != 403 or error.get("code") != "PERMISSION_DENIED":
                    problems.append(f"{who} {route.method} {route.path}: {response.status_code}")
                elif "suspended" not in error["message"] or tenant.id not in error["message"]:
                    problems.append(f"{who} {route.method} {route.path}: {error['message']!r}")
            for route in others:
                response = await send(client, route, tenant, headers)
                if response.status_code != answers_while_active[(who, route.method, route.path)]:
                    problems.append(f"{who} other {route.method} {route.path}: {response.text}")
        assert not problems, "\n".join(problems)
        assert stored_events(settings) == events_before, "a refused write stored events"

        # Still able to log in and to see why: the tenant shows its status and reason.
        fresh = await login(client, "acme-admin", PASSWORD)
        own = await client.get(
            f"/api/v1/tenants/{tenant.id}",
            params={"min_position": suspended["position"]},
            headers=fresh,
        )
        assert (own.json()["status"], own.json()["status_reason"]) == (
            "suspended",
            "invoice unpaid",
        )

        await set_status(client, root, tenant.id, "active")
        for route in writes:
            response = await send(client, route, tenant, tenant.admin)
            assert response.status_code < 300, (route, response.text)


async def test_a_platform_admin_in_a_suspended_tenant_cannot_write_but_can_reactivate_it(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant = await seed(client, root)
        acting = {**root, "X-Tenant-ID": tenant.id}
        await set_status(client, root, tenant.id, "suspended")

        create = await client.post("/api/v1/pipelines", json=pipeline_body("x"), headers=acting)
        error = assert_error(create, 403, "PERMISSION_DENIED")
        assert "suspended" in error["message"]
        revise = await client.put(
            f"/api/v1/pipelines/{tenant.values['pipeline_id']}",
            json=pipeline_body("nightly", namespace="prod"),
            headers=acting,
        )
        assert_error(revise, 403, "PERMISSION_DENIED")
        listed = await client.get("/api/v1/pipelines", headers=acting)
        assert listed.status_code == 200, listed.text
        # Managing the tenant itself is the platform's, outside the tenant: still allowed.
        quotas = await client.put(
            f"/api/v1/tenants/{tenant.id}/quotas", json={"max_pipelines": 5}, headers=root
        )
        assert quotas.status_code == 200, quotas.text

        reactivated = await set_status(client, root, tenant.id, "active")
        assert reactivated["status_reason"] == ""
        again = await client.post("/api/v1/pipelines", json=pipeline_body("x"), headers=acting)
        assert again.status_code == 201, again.text
        mine = await client.post("/api/v1/pipelines", json=pipeline_body("y"), headers=tenant.key)
        assert mine.status_code == 201, mine.text

        # Acting inside the tenant does not stop the platform admin from managing it.
        assert (await set_status(client, acting, tenant.id, "suspended"))["status"] == "suspended"
        assert (await set_status(client, acting, tenant.id, "active"))["status"] == "active"


async def test_a_deleted_tenants_users_and_keys_stop_authenticating_but_its_events_stay(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant = await seed(client, root)
        key = tenant.key["X-API-Key"]
        pipeline_id = tenant.values["pipeline_id"]

        deleted = await client.delete(f"/api/v1/tenants/{tenant.id}", headers=root)
        assert deleted.status_code == 200, deleted.text

        for headers in (tenant.admin, tenant.key, {"Authorization": f"Bearer {key}"}):
            for path in ("/api/v1/auth/me", "/api/v1/pipelines", f"/api/v1/tenants/{tenant.id}"):
                response = await client.get(path, headers=headers)
                assert_error(response, 401, "AUTHENTICATION_REQUIRED")
        for username in ("acme-admin", "victim"):
            login_again = await client.post(
                "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
            )
            assert_error(login_again, 401, "AUTHENTICATION_REQUIRED")

        # The platform admin still reads the tenant and its history, but cannot write in it.
        acting = {**root, "X-Tenant-ID": tenant.id}
        history = await client.get(f"/api/v1/pipelines/{pipeline_id}/history", headers=acting)
        assert history.status_code == 200, history.text
        assert [h["revision"] for h in history.json()["items"]] == [1, 2]
        listed = await client.get(
            "/api/v1/pipelines", params={"min_position": deleted.json()["position"]}, headers=acting
        )
        deployed = tenant.values["deployed_pipeline_id"]
        assert [p["id"] for p in listed.json()["items"]] == [pipeline_id, deployed]
        read = await client.get(
            f"/api/v1/tenants/{tenant.id}",
            params={"min_position": deleted.json()["position"]},
            headers=root,
        )
        assert read.json()["status"] == "deleted"
        write = await client.post("/api/v1/pipelines", json=pipeline_body("z"), headers=acting)
        error = assert_error(write, 403, "PERMISSION_DENIED")
        assert "deleted" in error["message"]


async def test_a_deleted_tenants_refresh_token_is_refused(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, _ = await make_tenant_user(client, root, "acme", "admin")
        tokens = await client.post(
            "/api/v1/auth/login", json={"username": "acme-admin", "password": PASSWORD}
        )
        assert tokens.status_code == 200, tokens.text

        deleted = await client.delete(f"/api/v1/tenants/{tenant_id}", headers=root)
        assert deleted.status_code == 200, deleted.text

        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens.json()["refresh_token"]}
        )
        assert_error(refreshed, 401, "AUTHENTICATION_REQUIRED")
