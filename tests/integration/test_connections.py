"""Tenant connections over HTTP (README "Connections"): CRUD with ETag/If-Match, plain
credentials and unknown secrets refused with 422, the delete refused while a pipeline
step names the connection, who may read and write them (as for secrets), isolation
between tenants (a guessed name included), the connection types at /connectors, and
the routes in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    make_tenant_user,
    platform_admin,
    running_app,
    visible,
)

BASE = "/api/v1/connections"
PASSWORD = "Distinctive-pl41n-Passw0rd-Q7"
WAREHOUSE: dict[str, Any] = {
    "host": "db.example.com",
    "database": "orders",
    "user": {"secret": "db-user"},
    "password": {"secret": "db-password", "version": 1},
}
API: dict[str, Any] = {
    "base_url": "https://api.example.com/v1",
    "headers": {"Authorization": {"secret": "api-token"}, "Accept": "application/json"},
}


async def secrets(client: AsyncTestClient, headers: dict[str, str], *names: str) -> None:
    for name in names:
        made = await client.post(
            "/api/v1/secrets", json={"name": name, "value": f"{name}-value"}, headers=headers
        )
        assert made.status_code == 201, made.text


async def create(
    client: AsyncTestClient, headers: dict[str, str], name: str, type_: str, config: Any
) -> dict[str, Any]:
    made = await client.post(
        BASE, json={"name": name, "type": type_, "config": config}, headers=headers
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    await visible(client, headers, f"{BASE}/{name}", body["position"])
    return body


async def test_crud_with_etags_and_the_references_kept_as_written(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        _, admin = await make_tenant_user(client, root, "acme", "admin")
        await secrets(client, admin, "db-user", "db-password", "api-token")

        made = await client.post(
            BASE,
            json={
                "name": "warehouse",
                "type": "postgres",
                "config": WAREHOUSE,
                "description": "dw",
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        assert made.headers["location"] == f"{BASE}/warehouse"
        assert made.headers["etag"] == '"1"'
        assert made.json()["config"] == WAREHOUSE and made.json()["type"] == "postgres"
        taken = await client.post(
            BASE, json={"name": "warehouse", "type": "http", "config": API}, headers=admin
        )
        assert_error(taken, 409, "RESOURCE_CONFLICT")
        await create(client, admin, "api", "http", API)

        shown = await client.get(
            f"{BASE}/warehouse", params={"min_position": made.json()["position"]}, headers=admin
        )
        assert shown.status_code == 200, shown.text
        assert shown.headers["etag"] == '"1"'
        body = shown.json()
        assert (body["config"], body["description"], body["referenced_by"]) == (WAREHOUSE, "dw", [])
        listed = await client.get(BASE, headers=admin)
        assert [c["name"] for c in listed.json()["items"]] == ["api", "warehouse"]
        only_http = await client.get(BASE, params={"type": "http"}, headers=admin)
        assert [c["name"] for c in only_http.json()["items"]] == ["api"]
        paged = await client.get(BASE, params={"limit": 1}, headers=admin)
        assert paged.json()["has_more"] is True and len(paged.json()["items"]) == 1

        changed = {**WAREHOUSE, "port": 5433, "sslmode": "require"}
        stale = await client.put(
            f"{BASE}/warehouse", json={"config": changed}, headers={**admin, "If-Match": '"7"'}
        )
        assert_error(stale, 412, "VERSION_CONFLICT")
        put = await client.put(
            f"{BASE}/warehouse", json={"config": changed}, headers={**admin, "If-Match": '"1"'}
        )
        assert put.status_code == 200, put.text
        assert put.headers["etag"] == '"2"' and put.json()["config"]["port"] == 5433
        assert put.json()["description"] == "dw"  # not named: unchanged
        retyped = await client.put(
            f"{BASE}/warehouse", json={"config": API, "type": "http"}, headers=admin
        )
        assert assert_error(retyped, 422, "VALIDATION_ERROR")["details"][0]["field"] == "type"

        events = await client.get(
            "/api/v1/events", params={"min_position": put.json()["position"]}, headers=admin
        )
        assert "norn.connection.updated.v1" in events.text
        deleted = await client.delete(f"{BASE}/warehouse", headers=admin)
        assert deleted.status_code == 200, deleted.text
        gone = await client.get(
            f"{BASE}/warehouse",
            params={"min_position": deleted.json()["position"]},
            headers=admin,
        )
        assert_error(gone, 404, "RESOURCE_NOT_FOUND")


async def test_plain_credentials_and_unknown_secrets_are_refused_by_field(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        _, admin = await make_tenant_user(client, root, "acme", "admin")
        await secrets(client, admin, "db-user", "db-password")

        plain = await client.post(
            BASE,
            json={
                "name": "warehouse",
                "type": "postgres",
                "config": {**WAREHOUSE, "password": PASSWORD},
            },
            headers=admin,
        )
        error = assert_error(plain, 422, "VALIDATION_ERROR")
        assert error["message"] == "the connection is invalid"
        assert [d["field"] for d in error["details"]] == ["config.password"]
        assert "POST /api/v1/secrets" in error["details"][0]["message"]
        assert PASSWORD not in plain.text
        header = await client.post(
            BASE,
            json={
                "name": "api",
                "type": "http",
                "config": {"base_url": "https://a.example", "headers": {"x-api-key": PASSWORD}},
            },
            headers=admin,
        )
        error = assert_error(header, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == ["config.headers.x-api-key"]
        assert PASSWORD not in header.text

        unknown = await client.post(
            BASE,
            json={
                "name": "warehouse",
                "type": "postgres",
                "config": {**WAREHOUSE, "password": {"secret": "nope"}},
            },
            headers=admin,
        )
        error = assert_error(unknown, 422, "VALIDATION_ERROR")
        missing = "no secret named 'nope' in this tenant (POST /api/v1/secrets creates one)"
        assert error["details"] == [{"field": "config.password", "message": missing}]
        bad_type = await client.post(
            BASE, json={"name": "x", "type": "ftp", "config": {}}, headers=admin
        )
        assert assert_error(bad_type, 422, "VALIDATION_ERROR")["details"][0]["field"] == "type"
        listed = await client.get(BASE, headers=admin)
        assert listed.json()["items"] == []
        # A bracket left open, a port that is no port: not a URL (it was a 500, or stored).
        for base_url in ("https://[::1", "https://a.example:99999/"):
            bad_url = await client.post(
                BASE,
                json={"name": "api", "type": "http", "config": {"base_url": base_url}},
                headers=admin,
            )
            error = assert_error(bad_url, 422, "VALIDATION_ERROR")
            assert [d["field"] for d in error["details"]] == ["config.base_url"], base_url
        # NUL, which PostgreSQL text cannot hold: a 400 or no such name, never a 500.
        assert_error(await client.get(f"{BASE}/a%00b", headers=admin), 404, "RESOURCE_NOT_FOUND")
        nul_type = await client.get(BASE, params={"type": "a\x00b"}, headers=admin)
        assert_error(nul_type, 400, "VALIDATION_ERROR")
        no_secret = await client.get("/api/v1/secrets/a%00b", headers=admin)
        assert_error(no_secret, 404, "RESOURCE_NOT_FOUND")


async def test_delete_is_refused_while_a_pipeline_step_uses_it_unless_forced(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        _, admin = await make_tenant_user(client, root, "acme", "admin")
        await secrets(client, admin, "api-token")
        await create(client, admin, "api", "http", API)
        step = {
            "name": "read",
            "plugin": "Input.http",
            "config": {"url": "https://api.example.com/v1/orders"},
            "connection": "api",
        }
        pipeline = await client.post(
            "/api/v1/pipelines", json={"name": "caller", "steps": [step]}, headers=admin
        )
        assert pipeline.status_code == 201, pipeline.text
        assert pipeline.json()["steps"][0]["connection"] == "api"
        read = await client.get(
            f"/api/v1/pipelines/{pipeline.json()['id']}",
            params={"min_position": pipeline.json()["position"]},
            headers=admin,
        )
        assert read.json()["steps"][0]["connection"] == "api"

        shown = (await client.get(f"{BASE}/api", headers=admin)).json()
        assert shown["referenced_by"] == [{"id": pipeline.json()["id"], "name": "caller"}]
        refused = await client.delete(f"{BASE}/api", headers=admin)
        error = assert_error(refused, 409, "RESOURCE_CONFLICT")
        assert "caller" in error["message"] and "force=true" in error["message"]
        forced = await client.delete(f"{BASE}/api", params={"force": "true"}, headers=admin)
        assert forced.status_code == 200, forced.text
        # The name is free again, even for another type.
        await secrets(client, admin, "db-user", "db-password")
        again = await create(client, admin, "api", "postgres", WAREHOUSE)
        assert again["id"] == shown["id"] and again["type"] == "postgres" and again["version"] > 2


async def test_viewers_and_operators_are_refused_editors_read_admins_write(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
        await secrets(client, admin, "api-token")
        await create(client, admin, "api", "http", API)
        login = {}
        for role in ("viewer", "operator", "editor"):
            user = await client.post(
                "/api/v1/users",
                json={
                    "username": f"acme-{role}",
                    "password": "correct-horse-battery-staple",
                    "tenant_id": tenant_id,
                    "roles": [role],
                },
                headers=admin,
            )
            assert user.status_code == 201, user.text
            signed = await client.post(
                "/api/v1/auth/login",
                json={"username": f"acme-{role}", "password": "correct-horse-battery-staple"},
            )
            login[role] = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        body = {"name": "x", "type": "http", "config": {"base_url": "https://x.example"}}
        for role in ("viewer", "operator"):
            for response in (
                await client.get(BASE, headers=login[role]),
                await client.get(f"{BASE}/api", headers=login[role]),
                await client.post(BASE, json=body, headers=login[role]),
            ):
                assert_error(response, 403, "PERMISSION_DENIED")
            # The connection types are no tenant's data: readable as the plugin catalog.
            assert (await client.get("/api/v1/connectors", headers=login[role])).status_code == 200
        editor = login["editor"]
        assert (await client.get(f"{BASE}/api", headers=editor)).status_code == 200
        assert (await client.get(BASE, headers=editor)).json()["items"][0]["name"] == "api"
        for response in (
            await client.post(BASE, json=body, headers=editor),
            await client.put(f"{BASE}/api", json={"config": API}, headers=editor),
            await client.delete(f"{BASE}/api", headers=editor),
        ):
            assert_error(response, 403, "PERMISSION_DENIED")


async def test_another_tenant_cannot_see_change_delete_or_reference_a_connection(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        _, a = await make_tenant_user(client, root, "tenant-a", "admin")
        _, b = await make_tenant_user(client, root, "tenant-b", "admin")
        await secrets(client, a, "api-token")
        made = await create(client, a, "shared-name", "http", API)
        for response in (
            await client.get(f"{BASE}/shared-name", headers=b),
            await client.put(f"{BASE}/shared-name", json={"config": API}, headers=b),
            await client.delete(f"{BASE}/shared-name", params={"force": "true"}, headers=b),
        ):
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        assert (await client.get(BASE, headers=b)).json()["items"] == []
        # B cannot point its connection at A's secret either: not found in B's tenant.
        borrowed = await client.post(
            BASE, json={"name": "mine", "type": "http", "config": API}, headers=b
        )
        error = assert_error(borrowed, 422, "VALIDATION_ERROR")
        assert "no secret named 'api-token'" in error["details"][0]["message"]
        # B's pipeline naming A's connection: not found in B's tenant, refused.
        step = {
            "name": "read",
            "plugin": "Input.http",
            "config": {"url": "https://api.example.com/x"},
            "connection": "shared-name",
        }
        theirs = await client.post(
            "/api/v1/pipelines", json={"name": "b-caller", "steps": [step]}, headers=b
        )
        error = assert_error(theirs, 422, "VALIDATION_ERROR")
        assert error["details"] == [
            {
                "field": "steps[0].connection",
                "message": "no connection named 'shared-name' (POST /api/v1/connections"
                " creates one)",
            }
        ]
        shown = (await client.get(f"{BASE}/shared-name", headers=a)).json()
        assert shown["referenced_by"] == [] and shown["id"] == made["id"]
        container = client.app.state.container
        b_tenant = (await client.get("/api/v1/auth/me", headers=b)).json()["tenant_id"]
        assert container.connections.config_of(b_tenant, "shared-name") is None
        # B's own connection of the same name is another connection.
        await secrets(client, b, "api-token")
        mine = await create(client, b, "shared-name", "http", API)
        assert mine["id"] != made["id"]


async def test_connectors_list_the_types_and_openapi_shows_the_routes(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        _, admin = await make_tenant_user(client, root, "acme", "admin")
        listed = await client.get("/api/v1/connectors", headers=admin)
        assert listed.status_code == 200, listed.text
        by_type = {c["type"]: c for c in listed.json()["items"]}
        assert by_type["postgres"]["serves"] == ["Input.postgres", "Output.postgres"]
        assert by_type["http"]["serves"] == ["Input.http", "Output.webhook"]
        schema = by_type["postgres"]["config_schema"]
        props = schema["$defs"]["PostgresConnection"]["properties"]
        assert props["password"]["anyOf"][0]["x-norn-secret"] == "required"
        assert props["port"]["default"] == 5432 and props["sslmode"]["default"] == "prefer"

        paths = (await client.get("/schema/openapi.json")).json()["paths"]
        assert {"get", "post"} <= set(paths["/api/v1/connections"])
        assert {"get", "put", "delete"} <= set(paths["/api/v1/connections/{connection_name}"])
        assert "get" in paths["/api/v1/connectors"]
        put = paths["/api/v1/connections/{connection_name}"]["put"]
        assert "If-Match" in {p["name"] for p in put["parameters"] if p["in"] == "header"}
