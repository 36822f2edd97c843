"""An HTTP client over the real app (same factory and bootstrap as `norn serve`), with
its relay and projectors running against the test's Postgres and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar.testing import AsyncTestClient

from api.app import create_app
from api.bootstrap import bootstrap_admin, build_container
from infrastructure.settings import Settings


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    assert settings.database_url and settings.nats_url
    container = build_container(settings, settings.database_url, settings.nats_url)
    bootstrap_admin(container)
    app = create_app(container, {"relay", "projector"})
    try:
        async with AsyncTestClient(app=app, timeout=30) as client:
            yield client
    finally:
        container.close()


async def login(client: AsyncTestClient, username: str, password: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def make_tenant_user(
    client: AsyncTestClient, admin: dict[str, str], tenant: str, role: str = "editor"
) -> tuple[str, dict[str, str]]:
    """A tenant and a user in it with `role`; returns (tenant_id, that user's headers)."""
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
    return tenant_id, await login(client, username, password)


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
