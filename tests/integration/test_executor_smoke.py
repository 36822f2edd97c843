"""A first end-to-end check of the executor role inside the app: trigger, execute, read."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, running_app
from tests.support.plugins import TEST_PLUGINS

ALL_ROLES = frozenset({"relay", "projector", "executor"})


async def wait_status(client: Any, headers: dict[str, str], run_id: str, done: set[str]) -> dict:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        response = await client.get(f"/api/v1/runs/{run_id}", headers=headers)
        if response.status_code == 200 and response.json()["status"] in done:
            return response.json()
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.1)


async def test_a_run_executes_its_steps_in_order(settings: Settings) -> None:
    settings = replace(settings, plugins=TEST_PLUGINS, heartbeat_interval=0.5, heartbeat_timeout=3)
    async with running_app(settings, roles=ALL_ROLES) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, root, "acme", "editor")
        body = {
            "name": "three",
            "steps": [
                {"name": "a", "plugin": "Test.emit", "config": {"count": 5}},
                {
                    "name": "b",
                    "plugin": "Test.flaky",
                    "config": {"failures": 1},
                    "depends_on": ["a"],
                    "retries": 2,
                    "retry_delay": 0.05,
                },
                {"name": "c", "plugin": "Test.emit", "config": {"count": 1}, "depends_on": ["b"]},
            ],
        }
        created = await client.post("/api/v1/pipelines", json=body, headers=editor)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        queued = await client.post(
            f"/api/v1/pipelines/{pid}/runs", json={"params": {"x": 1}}, headers=editor
        )
        assert queued.status_code == 202, queued.text
        run = await wait_status(client, editor, queued.json()["run_id"], {"succeeded", "failed"})
        assert run["status"] == "succeeded", run
        steps = {s["name"]: s for s in run["steps"]}
        assert steps["a"]["records_out"] == 5
        assert steps["b"]["attempts"] == 2 and steps["b"]["records_in"] == 5
        assert steps["c"]["records_in"] == 5 and steps["c"]["records_out"] == 6
