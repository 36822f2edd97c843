"""The MCP server (README "MCP server") through the official SDK's own client: over
streamable HTTP at /mcp of the real app under uvicorn, and over stdio from a `norn mcp`
process, against real PostgreSQL and NATS. Two tenants, each with API keys: a tenant's
tools work within it, the other tenant's ids are not found, a viewer cannot trigger a
run, and no credentials is no answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, serving_app, visible
from tests.integration.run_support import EXECUTING, executing, make_pipeline, step
from tests.support.processes import NORN, norn_env

Headers = dict[str, str]
TOOLS = {
    "list_pipelines",
    "get_pipeline",
    "validate_pipeline",
    "generate_pipeline",
    "trigger_run",
    "get_run",
    "get_run_status",
    "get_run_logs",
    "list_runs",
    "list_deployments",
    "list_jobs",
    "list_plugins",
}


@dataclass
class Tenant:
    id: str
    admin: Headers
    editor_key: str
    viewer_key: str
    pipeline_id: str


@asynccontextmanager
async def mcp_over_http(base_url: str, headers: Headers) -> AsyncIterator[Client]:
    """The SDK's client over streamable HTTP, sending `headers` with every request."""
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(f"{base_url}/mcp", http_client=http)
        async with Client(transport) as client:
            yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's answer (its structured content), asserting it succeeded."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # The text content says the same, as JSON, for clients that read only text.
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


async def refused(client: Client, tool: str, status: int, code: str, **arguments: Any) -> str:
    """A tool call refused as REST refuses it; returns the message."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    error = (result.structured_content or {})["error"]
    assert (error["status"], error["code"]) == (status, code), error
    assert set(error) == {"code", "status", "message", "details", "request_id"}
    assert "Traceback" not in error["message"]
    return str(error["message"])


async def api_key(client: httpx.AsyncClient, admin: Headers, role: str) -> str:
    response = await client.post(
        "/api/v1/api-keys", json={"name": f"mcp-{role}", "roles": [role]}, headers=admin
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def new_tenant(client: httpx.AsyncClient, root: Headers, name: str) -> Tenant:
    tenant_id, admin = await make_tenant_user(client, root, name, "admin")  # type: ignore[arg-type]
    steps = [step("emit", "Test.emit", count=2, log_lines=3)]
    pipeline_id = await make_pipeline(client, admin, f"{name}-orders", steps)
    return Tenant(
        tenant_id,
        admin,
        await api_key(client, admin, "editor"),
        await api_key(client, admin, "viewer"),
        pipeline_id,
    )


async def until_finished(client: Client, run_id: str, position: int) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        status = await call(client, "get_run_status", run_id=run_id, min_position=position)
        if status["status"] in ("succeeded", "failed", "cancelled", "timed_out", "crashed"):
            return status
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.1)


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant, Tenant]]:
    """The app under uvicorn (with an executor) and two tenants A and B, each with a
    pipeline, an editor key and a viewer key; A also a deployment and a job."""
    async with serving_app(executing(settings), roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")  # type: ignore[arg-type]
        a = await new_tenant(client, root, "mcp-a")
        b = await new_tenant(client, root, "mcp-b")
        deployment = await client.post(
            "/api/v1/deployments",
            json={"pipeline_id": a.pipeline_id, "environment": "staging"},
            headers=a.admin,
        )
        assert deployment.status_code == 201, deployment.text
        job = await client.post(
            "/api/v1/scheduler/jobs",
            json={
                "name": "nightly",
                "target": {"pipeline_id": a.pipeline_id},
                "cron_expr": "@daily",
            },
            headers=a.admin,
        )
        assert job.status_code == 201, job.text
        await visible(client, a.admin, "/api/v1/deployments", deployment.json()["position"])
        await visible(client, a.admin, "/api/v1/scheduler/jobs", job.json()["position"])
        yield client, a, b


async def test_a_tenants_tools_over_http_work_within_it_and_not_in_another(
    world: tuple[httpx.AsyncClient, Tenant, Tenant],
) -> None:
    http, a, b = world
    base = str(http.base_url).rstrip("/")
    async with mcp_over_http(base, {"Authorization": f"Bearer {a.editor_key}"}) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS

        listed = await call(mcp, "list_pipelines")
        assert [p["id"] for p in listed["items"]] == [a.pipeline_id]
        pipeline = await call(mcp, "get_pipeline", pipeline_id=a.pipeline_id)
        assert (pipeline["name"], pipeline["steps"][0]["plugin"]) == ("mcp-a-orders", "Test.emit")

        checked = await call(mcp, "validate_pipeline", pipeline_id=a.pipeline_id)
        assert checked == {"valid": True, "errors": []}
        bad = {"name": "x", "steps": [{"name": "s", "plugin": "No.such"}]}
        checked = await call(mcp, "validate_pipeline", definition=bad)
        assert not checked["valid"] and checked["errors"][0]["field"].startswith("steps[0]")
        drafted = await call(
            mcp, "generate_pipeline", description="read orders.jsonl, keep paid orders"
        )
        assert drafted["definition"]["steps"] and isinstance(drafted["valid"], bool)

        queued = await call(mcp, "trigger_run", pipeline_id=a.pipeline_id, params={"day": "mon"})
        run_id, position = queued["run_id"], queued["position"]
        assert queued["status"] == "queued"
        status = await until_finished(mcp, run_id, position)
        assert (status["status"], status["progress"]) == ("succeeded", 100.0)
        run = await call(mcp, "get_run", run_id=run_id)
        assert (run["params"], run["trigger"]["kind"]) == ({"day": "mon"}, "api_key")
        assert run["steps"][0]["records_out"] == 2
        logs = await call(mcp, "get_run_logs", run_id=run_id)
        said = [line["message"] for line in logs["items"]]
        assert said[:3] == ["line 0", "line 1", "line 2"] and not logs["truncated"]
        assert (await call(mcp, "get_run_logs", run_id=run_id, limit=2))["truncated"]
        runs = await call(mcp, "list_runs", pipeline_id=a.pipeline_id)
        assert [r["id"] for r in runs["items"]] == [run_id]

        deployments = await call(mcp, "list_deployments")
        assert [(d["pipeline_id"], d["environment"]) for d in deployments["items"]] == [
            (a.pipeline_id, "staging")
        ]
        jobs = await call(mcp, "list_jobs")
        assert [j["name"] for j in jobs["items"]] == ["nightly"]
        plugins = await call(mcp, "list_plugins", plugin_type="Test")
        assert "Test.emit" in {p["plugin"] for p in plugins["items"]}

    # B's key: A's ids are not found, exactly as over REST; B's lists hold none of A's.
    async with mcp_over_http(base, {"X-API-Key": b.editor_key}) as mcp:
        for tool, arguments in (
            ("get_pipeline", {"pipeline_id": a.pipeline_id}),
            ("validate_pipeline", {"pipeline_id": a.pipeline_id}),
            ("trigger_run", {"pipeline_id": a.pipeline_id}),
            ("get_run", {"run_id": run_id}),
            ("get_run_status", {"run_id": run_id}),
            ("get_run_logs", {"run_id": run_id}),
        ):
            message = await refused(mcp, tool, 404, "RESOURCE_NOT_FOUND", **arguments)
            assert "not found" in message
        assert [p["id"] for p in (await call(mcp, "list_pipelines"))["items"]] == [b.pipeline_id]
        # An argument of the wrong type, refused by the SDK's schema check: REST's shape.
        for tool, arguments in (("list_runs", {"limit": "abc"}), ("list_pipelines", {"tags": "x"})):
            [(field, _)] = arguments.items()
            message = await refused(mcp, tool, 400, "VALIDATION_ERROR", **arguments)
            assert message.startswith(f"{field}:") and "pydantic" not in message, message
        # One the tool does not take, as REST refuses an undeclared query parameter.
        message = await refused(mcp, "list_runs", 400, "VALIDATION_ERROR", offset=100)
        assert message == "unknown argument(s): offset"
        for tool in ("list_runs", "list_deployments", "list_jobs"):
            assert (await call(mcp, tool))["items"] == [], tool
        rest = await http.get(f"/api/v1/runs/{run_id}", headers={"X-API-Key": b.editor_key})
        assert rest.status_code == 404  # the same answer REST gives


async def test_roles_apply_as_over_rest_and_no_credentials_get_no_answer(
    world: tuple[httpx.AsyncClient, Tenant, Tenant],
) -> None:
    http, a, _ = world
    base = str(http.base_url).rstrip("/")
    async with mcp_over_http(base, {"Authorization": f"Bearer {a.viewer_key}"}) as mcp:
        assert (await call(mcp, "get_pipeline", pipeline_id=a.pipeline_id))["id"] == a.pipeline_id
        message = await refused(
            mcp, "trigger_run", 403, "PERMISSION_DENIED", pipeline_id=a.pipeline_id
        )
        assert "runs:trigger" in message
        # Bad arguments: REST's 400, naming the argument; not a trace.
        result = await mcp.call_tool("get_run", {"run_id": "not-a-uuid"})
        assert result.is_error
        error = (result.structured_content or {})["error"]
        assert (error["status"], error["details"]) == (
            400,
            [{"field": "run_id", "message": "run_id must be a UUID"}],
        )
        await refused(mcp, "list_runs", 400, "VALIDATION_ERROR", limit=0)
        await refused(mcp, "list_runs", 400, "VALIDATION_ERROR", cursor="garbage")
    # A user's access token works too (and acts with the user's roles).
    async with mcp_over_http(base, a.admin) as mcp:
        assert (await call(mcp, "list_jobs"))["items"][0]["name"] == "nightly"

    # No credentials, or a key that is no key: refused before any MCP message is read,
    # with REST's 401, and the SDK's client cannot connect.
    for headers in ({}, {"X-API-Key": "nrn_bogus_bogus"}):
        raw = await http.post("/mcp", json=_initialize(), headers=headers)
        assert raw.status_code == 401, raw.text
        assert raw.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
        with pytest.raises(Exception):  # noqa: B017 - whichever the SDK raises for a 401
            async with mcp_over_http(base, headers) as mcp:
                await mcp.list_tools()
    # Stateless: one JSON-RPC message per POST, as the README's curl sends it, answered in
    # JSON; and an MCP request is an API request: it takes a token from the key's bucket.
    raw = await http.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "list_jobs", "arguments": {"limit": 5}},
        },
        headers={"X-API-Key": a.viewer_key, "Accept": "application/json, text/event-stream"},
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["result"]["structuredContent"]["items"][0]["name"] == "nightly"
    assert int(raw.headers["x-ratelimit-limit"]) > 0 and "x-ratelimit-remaining" in raw.headers


def _initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }


async def test_norn_mcp_over_stdio_acts_as_its_api_key(
    world: tuple[httpx.AsyncClient, Tenant, Tenant], settings: Settings
) -> None:
    _, a, b = world
    env = norn_env(settings, NORN_API_KEY=a.viewer_key)
    server = StdioServerParameters(command=NORN, args=["mcp"], env=env)
    async with Client(server) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        pipeline = await call(mcp, "get_pipeline", pipeline_id=a.pipeline_id)
        assert pipeline["tenant_id"] == a.id
        await refused(mcp, "get_pipeline", 404, "RESOURCE_NOT_FOUND", pipeline_id=b.pipeline_id)
        await refused(mcp, "trigger_run", 403, "PERMISSION_DENIED", pipeline_id=a.pipeline_id)


async def test_norn_mcp_tool_calls_take_tokens_from_the_keys_bucket(
    world: tuple[httpx.AsyncClient, Tenant, Tenant], settings: Settings
) -> None:
    _, a, _ = world
    low = ",".join(f"{plan}=3600/2" for plan in ("free", "pro", "enterprise", "platform"))
    env = norn_env(settings, NORN_API_KEY=a.editor_key, NORN_RATE_LIMITS=low)
    async with Client(StdioServerParameters(command=NORN, args=["mcp"], env=env)) as mcp:
        # A burst of 2 (a process may admit a few more before its bucket's first sync,
        # README "Rate limits"); listing tools takes none.
        for calls in range(1, 40):  # noqa: B007 - the count is reported below
            result = await mcp.call_tool("list_plugins", {})
            if result.is_error:
                break
        error = (result.structured_content or {})["error"]
        assert (error["status"], error["code"]) == (429, "RATE_LIMIT_EXCEEDED"), error
        assert 2 < calls <= 13, calls
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS


def test_norn_mcp_needs_an_api_key_that_authenticates(settings: Settings) -> None:
    missing = subprocess.run(  # noqa: S603
        [NORN, "mcp"], env=norn_env(settings, NORN_API_KEY=None), capture_output=True, text=True
    )
    assert missing.returncode == 2 and "NORN_API_KEY" in missing.stderr
    bogus = subprocess.run(  # noqa: S603
        [NORN, "mcp"],
        env=norn_env(settings, NORN_API_KEY="nrn_bogus_bogus"),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert bogus.returncode == 1, bogus.stderr
    assert "Traceback" not in bogus.stderr and bogus.stderr.startswith("norn: ")
