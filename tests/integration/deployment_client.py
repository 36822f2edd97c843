"""Deployments over HTTP, the helpers their tests share: a tenant of its own, users,
deployments made and read back at a position, a pipeline revised, a status awaited."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    login,
    make_tenant_user,
    pipeline_body,
    platform_admin,
    unique,
)

BASE = "/api/v1/deployments"
BASE_ID = "00000000-0000-4000-8000-000000000000"
Headers = dict[str, str]


async def new_tenant(client: AsyncTestClient, settings: Settings) -> tuple[str, Headers, Headers]:
    """A tenant of its own: (tenant id, an editor's headers, the platform admin's)."""
    admin = await platform_admin(client, settings)
    tenant_id, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    return tenant_id, editor, admin


async def new_user(client: AsyncTestClient, admin: Headers, tenant_id: str, role: str) -> Headers:
    username, password = unique(role), "correct-horse-battery-staple"
    made = await client.post(
        "/api/v1/users",
        json={"username": username, "password": password, "tenant_id": tenant_id, "roles": [role]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    return await login(client, username, password)


async def deploy(
    client: AsyncTestClient, headers: Headers, pipeline_id: str, environment: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        BASE, json={"pipeline_id": pipeline_id, "environment": environment, **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{BASE}/{response.json()['id']}"
    return dict(response.json())


async def read_at(
    client: AsyncTestClient, headers: Headers, path: str, position: int, **params: Any
) -> Any:
    """`path` read with ?min_position= and `params` (the test client replaces a query
    written into the path when given params, so filters go here)."""
    response = await client.get(path, params={"min_position": position, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def revise(client: AsyncTestClient, headers: Headers, pipeline: dict[str, Any]) -> None:
    body = pipeline_body(pipeline["name"], description="revision 2")
    revised = await client.put(f"/api/v1/pipelines/{pipeline['id']}", json=body, headers=headers)
    assert revised.status_code == 200 and revised.json()["revision"] == 2, revised.text


async def status_when(
    client: Any, headers: Headers, path: str, done: Any, seconds: float = 30
) -> dict[str, Any]:
    """The status once `done(status)` holds (the verification run's executor decides). A
    404 is waited out too: the deployments read model may not have the deployment yet
    (the CI machine showed it, right after the create), and so is a status that has no
    release yet for `done` to look at (CI: a lagging read model showed `pending` with no
    `recent_releases` right after the release was accepted)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await client.get(f"{path}/status", headers=headers)
        assert response.status_code in (200, 404), response.text
        if response.status_code == 200 and _holds(done, response.json()):
            return dict(response.json())
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.1)


def _holds(done: Any, status: dict[str, Any]) -> bool:
    """`done(status)`, where a release it indexes that the read model has not yet got
    counts as "not yet" rather than as a failure of the test."""
    try:
        return bool(done(status))
    except (IndexError, KeyError, TypeError):
        return False
