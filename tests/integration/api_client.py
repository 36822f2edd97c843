"""An HTTP client over the real app (same factory and bootstrap as `norn serve`), with
its relay and projectors running against the test's Postgres and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import httpx
import uvicorn
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.bootstrap import bootstrap_admin, build_container
from infrastructure.settings import Settings


@asynccontextmanager
async def running_app(
    settings: Settings, roles: frozenset[str] = frozenset({"relay", "projector"})
) -> AsyncIterator[AsyncTestClient]:
    assert settings.database_url and settings.nats_url
    container = build_container(settings, settings.database_url, settings.nats_url)
    bootstrap_admin(container)
    app = create_app(container, set(roles))
    try:
        async with AsyncTestClient(app=app, timeout=30) as client:
            yield client
    finally:
        container.close()


class _InTheAppsLoop(httpx.AsyncBaseTransport):
    """Serves each request in the app's own event loop (the test client's portal thread,
    where its pools and background roles live) without waiting for the one before.
    Serving it in the test's loop instead ran the app's pools from two loops: a pool's
    wake-up sent to the other loop stalled a login test for the pool's 30 s timeout."""

    def __init__(self, client: AsyncTestClient, address: tuple[str, int]) -> None:
        self._portal = client.blocking_portal
        self._asgi = httpx.ASGITransport(app=client.app, client=address)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        served = self._portal.start_task_soon(self._asgi.handle_async_request, request)
        return await asyncio.wrap_future(served)


@asynccontextmanager
async def overlapping(
    client: AsyncTestClient, address: tuple[str, int] = ("testclient", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app whose requests really run at the same time (the test
    client serves one request at a time, so a race sent through it never happens), from
    `address` (the test client's own by default)."""
    transport = _InTheAppsLoop(client, address)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", timeout=30
    ) as raw:
        yield raw


async def login(client: AsyncTestClient, username: str, password: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def make_tenant_user(
    client: AsyncTestClient,
    admin: dict[str, str],
    tenant: str,
    role: str = "editor",
    *,
    projected: bool = True,
) -> tuple[str, dict[str, str]]:
    """A tenant and a user in it with `role`; returns (tenant_id, that user's headers).
    Both are in their read models when this returns (reads of them need no min_position:
    a test's first read of the tenant read it before the projection had it, now and then),
    unless `projected` is False (an app without the projector role)."""
    created = await client.post("/api/v1/tenants", json={"name": tenant}, headers=admin)
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    username = f"{tenant}-{role}".lower()
    password = "correct-horse-battery-staple"
    user = await client.post(
        "/api/v1/users",
        json={"username": username, "password": password, "tenant_id": tenant_id, "roles": [role]},
        headers=admin,
    )
    assert user.status_code == 201, user.text
    if projected:
        await visible(client, admin, f"/api/v1/tenants/{tenant_id}", created.json()["position"])
        await visible(client, admin, f"/api/v1/users/{user.json()['id']}", user.json()["position"])
    return tenant_id, await login(client, username, password)


async def visible(client: Any, headers: dict[str, str], path: str, position: int) -> None:
    """Wait until the read model behind `path` has `position` (the API's min_position)."""
    shown = await client.get(path, params={"min_position": position}, headers=headers)
    assert shown.status_code == 200, shown.text


def pipeline_body(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "description": "reads, filters, writes",
        "tags": ["etl", "daily"],
        "steps": [
            {"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}},
            {
                "name": "paid",
                "plugin": "Data_Processing.filter",
                "config": {"expression": "status == 'paid'"},
                "depends_on": ["read"],
            },
            {
                "name": "write",
                "plugin": "Output.file",
                "config": {"path": "out.jsonl"},
                "depends_on": ["paid"],
            },
        ],
    }
    body.update(overrides)
    return body


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The documented error shape, with the given status and code; returns the error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


async def create_pipeline(
    client: AsyncTestClient, headers: dict[str, str], name: str, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/pipelines", json=pipeline_body(name, **overrides), headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def wait_ready(client: Any, seconds: float = 30.0) -> dict[str, Any]:
    """Poll /health/ready until Postgres, NATS and the projections all report ok."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await client.get("/health/ready")
        if response.status_code == 200:
            return response.json()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not ready after {seconds}s: {response.text}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def serving_app(
    settings: Settings, roles: frozenset[str] = frozenset({"relay", "projector"})
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under a real uvicorn server on a free port, for what the in-process
    test client cannot do (it buffers whole responses, so no incremental SSE)."""
    assert settings.database_url and settings.nats_url
    container = build_container(settings, settings.database_url, settings.nats_url)
    bootstrap_admin(container)
    app = create_app(container, set(roles))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped during start-up")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=15)
        sock.close()
        container.close()


def unique(name: str) -> str:
    """`name` made unique: for what a test creates on an app other tests share."""
    return f"{name}-{uuid4().hex[:8]}"


async def platform_admin(client: AsyncTestClient, settings: Settings) -> dict[str, str]:
    """The bootstrap platform admin's headers."""
    return await login(client, settings.admin_username or "", settings.admin_password or "")
