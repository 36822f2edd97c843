"""Helpers for the run and executor tests: settings that load the test plugins with short
heartbeats, pipelines of test steps, waiting for a run by polling with a deadline, and
reading a run's events straight from the event store (the source of truth)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import psycopg

from infrastructure.mapper import decode_state
from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user
from tests.support.plugins import TEST_PLUGINS

T = TypeVar("T")

ALL_ROLES = frozenset({"relay", "projector", "executor"})
NO_EXECUTOR = frozenset({"relay", "projector"})
EXECUTOR_ONLY = frozenset({"executor"})
FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out", "crashed"})
DEADLINE = 60.0
"""Seconds any wait in these tests may take before it fails (a bound, not a timing): a
passing test never waits it out. Generous, because the suite runs in four workers on
two cores, and a recovery that waits on processes started under that load (the
tests/e2e crash tests) missed a 30 s bound there."""


def run_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test settings with the test plugins and heartbeats short enough that a lost
    executor is noticed within a couple of seconds."""
    values: dict[str, Any] = {
        "plugins": TEST_PLUGINS,
        "heartbeat_interval": 0.3,
        "heartbeat_timeout": 1.5,
        "execute_wait_timeout": 20.0,
    }
    values.update(overrides)
    return replace(settings, **values)


async def poll(probe: Callable[[], Awaitable[T | None]], what: str, seconds: float = DEADLINE) -> T:
    """Call `probe` until it returns something other than None; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = 0.02
    while True:
        result = await probe()
        if result is not None:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {seconds:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.2)


async def get_run(client: Any, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/runs/{run_id}", headers=headers)
    assert response.status_code in (200, 404), response.text
    return response.json() if response.status_code == 200 else {"status": None}


async def wait_run(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    statuses: frozenset[str] | set[str] = FINISHED,
    *,
    step: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The run (GET /runs/{id}) once its status is one of `statuses` and, with `step`
    = (name, status), once that step has that status."""

    async def probe() -> dict[str, Any] | None:
        run = await get_run(client, headers, run_id)
        if run["status"] not in statuses:
            return None
        if step is not None and steps_of(run)[step[0]]["status"] != step[1]:
            return None
        return run

    return await poll(probe, f"run {run_id} to be {sorted(statuses)} (step {step})")


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["steps"]}


def step(name: str, plugin: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    """A step of a pipeline body; `config` and the retry fields go in `fields`."""
    return {"name": name, "plugin": plugin, "depends_on": list(depends_on), **fields}


async def make_pipeline(
    client: Any, headers: dict[str, str], name: str, *steps: dict[str, Any], **fields: Any
) -> str:
    response = await client.post(
        "/api/v1/pipelines", json={"name": name, "steps": list(steps), **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def trigger(
    client: Any, headers: dict[str, str], pipeline_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/pipelines/{pipeline_id}/runs", json=body, headers=headers
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def tenant_editor(
    client: Any, settings: Settings, name: str = "acme", plan: str | None = None
) -> tuple[str, dict[str, str], dict[str, str]]:
    """(tenant id, an editor's headers, the platform admin's headers)."""
    root = await login(client, settings.admin_username or "", settings.admin_password or "")
    tenant_id, editor = await make_tenant_user(client, root, name, "editor")
    if plan is not None:
        changed = await client.put(
            f"/api/v1/tenants/{tenant_id}", json={"plan": plan}, headers=root
        )
        assert changed.status_code == 200, changed.text
    return tenant_id, editor, root


async def tenant_user(
    client: Any, root: dict[str, str], tenant_id: str, role: str
) -> dict[str, str]:
    """Headers of a new user of the tenant with `role` (named after the role)."""
    password = "correct-horse-battery-staple"
    created = await client.post(
        "/api/v1/users",
        json={"username": role, "password": password, "tenant_id": tenant_id, "roles": [role]},
        headers=root,
    )
    assert created.status_code == 201, created.text
    return await login(client, role, password)


async def set_quotas(
    client: Any, root: dict[str, str], tenant_id: str, **quotas: int | None
) -> None:
    response = await client.put(f"/api/v1/tenants/{tenant_id}/quotas", json=quotas, headers=root)
    assert response.status_code == 200, response.text


def run_events(database_url: str, run_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(event class name, stored state) of one run's events, or of every run's, in the
    store's order; each state carries `originator_id` as a string."""
    query = (
        "SELECT originator_id::text, topic, state FROM norn_events WHERE topic LIKE 'domain.run:%%'"
    )
    params: list[Any] = []
    if run_id is not None:
        query += " AND originator_id = %s"
        params.append(run_id)
    query += " ORDER BY notification_id"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(query, params).fetchall()
    return [
        (topic.split(":", 1)[1], {**decode_state(bytes(state)), "originator_id": originator})
        for originator, topic, state in rows
    ]


def event_names(database_url: str, run_id: str) -> list[str]:
    return [name for name, _ in run_events(database_url, run_id)]


def appends_of(database_url: str, run_id: str) -> list[list[str]]:
    """The run's events grouped by the append (transaction) that stored them, in order."""
    query = (
        "SELECT tx_id::text, topic FROM norn_events WHERE originator_id = %s"
        " ORDER BY notification_id"
    )
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(query, (run_id,)).fetchall()
    appends: list[list[str]] = []
    last = None
    for tx_id, topic in rows:
        if tx_id != last:
            appends.append([])
            last = tx_id
        appends[-1].append(topic.split(":", 1)[1])
    return appends
