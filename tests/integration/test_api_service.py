"""The service's own surface: health and readiness, the OpenAPI document, the plugin
catalog."""

from __future__ import annotations

import psycopg

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    login,
    make_tenant_user,
    running_app,
    wait_ready,
)

BUILTINS = {
    "Input.file",
    "Input.http",
    "Data_Processing.filter",
    "Data_Processing.transform",
    "Output.file",
    "Output.webhook",
    "Input.postgres",
    "Output.postgres",
}


async def test_health_and_readiness(settings: Settings) -> None:
    async with running_app(settings) as client:
        live = await client.get("/health")
        assert live.status_code == 200, live.text
        assert live.json() == {"status": "ok"}
        ready = await wait_ready(client)
        assert ready["status"] == "ready"
        checks = ready["checks"]
        assert {"postgres", "nats", "projections"} <= set(checks)
        assert all(check["ok"] is True for check in checks.values()), checks
        assert {"pipelines", "tenants"} <= set(checks["projections"]["lag"])
        assert checks["projections"]["stuck"] == []


async def test_readiness_fails_when_a_read_model_stops_moving(settings: Settings) -> None:
    # No projector runs here: the admin's registration waits, unprojected.
    async with running_app(settings, roles=frozenset({"relay"})) as client:
        behind = (await client.get("/health/ready")).json()["checks"]["projections"]
        # Behind by a moment is still ready: catching up is normal.
        assert behind["ok"] is True, behind
        assert behind["lag"]["tenants"] >= 1
        with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
            conn.execute("UPDATE norn_events SET recorded_at = now() - interval '1 minute'")

        response = await client.get("/health/ready")

        assert response.status_code == 503
        projections = response.json()["checks"]["projections"]
        assert projections["ok"] is False
        assert projections["stuck"] == [
            "api_keys",
            "audit_log",
            "connections",
            "deployments",
            "jobs",
            "pipelines",
            "runs",
            "secrets",
            "tenants",
            "users",
            "webhooks",
        ]
        assert projections["oldest_unprojected_seconds"]["tenants"] >= 60


async def test_openapi_document_describes_the_api(settings: Settings) -> None:
    async with running_app(settings) as client:
        response = await client.get("/schema/openapi.json")
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["openapi"].startswith("3.")
        paths = doc["paths"]
        assert "/api/v1/pipelines" in paths
        assert {"get", "post"} <= set(paths["/api/v1/pipelines"])
        assert "/api/v1/pipelines/{pipeline_id}/rollback" in paths
        assert "/api/v1/auth/login" in paths

        # What the handlers' signatures cannot say (api/openapi.py).
        revise = paths["/api/v1/pipelines/{pipeline_id}"]["put"]
        headers = {p["name"] for p in revise["parameters"] if p["in"] == "header"}
        assert {"If-Match", "Idempotency-Key", "X-Tenant-ID"} <= headers
        error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
        for status in ("400", "401", "403", "404", "409", "412", "422", "429", "503"):
            content = revise["responses"][status]["content"]["application/json"]
            assert content["schema"] == error_ref, status
        assert revise["security"] == [{"bearer": []}, {"apiKey": []}]
        assert doc["components"]["securitySchemes"]["apiKey"] == {
            "type": "apiKey",
            "name": "X-API-Key",
            "in": "header",
        }
        login = paths["/api/v1/auth/login"]["post"]
        assert login["security"] == []  # public: no credentials asked for
        assert "401" in login["responses"] and "403" not in login["responses"]
        assert paths["/health"]["get"]["security"] == []
        assert "412" not in paths["/api/v1/pipelines"]["post"]["responses"]  # no If-Match
        assert doc["components"]["schemas"]["PipelineWrite"]["additionalProperties"] is False
        rollback = paths["/api/v1/pipelines/{pipeline_id}:rollback"]["post"]
        assert (
            rollback["requestBody"]
            == paths["/api/v1/pipelines/{pipeline_id}/rollback"]["post"]["requestBody"]
        )
        assert "post" in paths["/api/v1/runs/{run_id}:cancel"]
        # fields= where it applies, with the partial answer it gives; readiness's 503.
        read = paths["/api/v1/pipelines/{pipeline_id}"]["get"]
        assert "fields" in {p["name"] for p in read["parameters"]}
        assert len(read["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]) == 2
        assert "fields" not in {p["name"] for p in revise["parameters"]}
        assert "503" in paths["/health/ready"]["get"]["responses"]
        # The headers answers carry.
        listed = paths["/api/v1/pipelines"]["get"]["responses"]["200"]["headers"]
        assert {"Link", "X-Total-Count", "X-RateLimit-Remaining", "X-Request-ID"} <= set(listed)
        assert "Idempotent-Replayed" in revise["responses"]["200"]["headers"]
        assert "Retry-After" in revise["responses"]["429"]["headers"]
        assert "X-RateLimit-Limit" not in login["responses"]["200"]["headers"]
        assert "503" not in paths["/health/live"]["get"]["responses"]

        # The docs page loads Swagger UI from this server, not from a CDN.
        for page in ("/schema", "/schema/swagger"):
            html = (await client.get(page)).text
            assert "/schema/assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
        asset = await client.get("/schema/assets/swagger-ui-bundle.js")
        assert asset.status_code == 200 and len(asset.content) > 100_000


async def test_plugin_catalog(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, viewer = await make_tenant_user(client, admin, "acme", "viewer")
        assert_error(await client.get("/api/v1/plugins"), 401, "AUTHENTICATION_REQUIRED")

        listed = await client.get("/api/v1/plugins", headers=viewer)
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        assert {p["plugin"] for p in items} >= BUILTINS
        for plugin in items:
            assert plugin["plugin"] == f"{plugin['type']}.{plugin['name']}"
            assert plugin["description"]

        inputs = (await client.get("/api/v1/plugins/Input", headers=viewer)).json()["items"]
        assert {p["plugin"] for p in inputs} >= {"Input.file", "Input.http"}
        assert all(p["type"] == "Input" for p in inputs)

        detail = await client.get("/api/v1/plugins/Input/file", headers=viewer)
        assert detail.status_code == 200, detail.text
        schema = detail.json()["config_schema"]
        if "$ref" in schema:  # a JSON Schema may keep its object under $defs
            schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        assert "path" in schema["properties"]
        assert "path" in schema["required"]

        detail = await client.get("/api/v1/plugins/Output/postgres", headers=viewer)
        assert detail.status_code == 200, detail.text
        schema = detail.json()["config_schema"]
        schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        assert schema["required"] == ["host", "database", "user", "table"]
        assert schema["properties"]["mode"]["enum"] == ["append", "replace", "upsert"]
        password = schema["properties"]["password"]["anyOf"][0]
        assert password["x-norn-secret"] == "required"

        for path in ("/api/v1/plugins/Nope", "/api/v1/plugins/Input/nope"):
            assert_error(await client.get(path, headers=viewer), 404, "RESOURCE_NOT_FOUND")
