"""Helpers for tests over runs: the app with an executor and the Test plugins, pipelines
of Test steps, runs taken to their end, and rows seeded straight into the runs read model
(for times and durations a test must know exactly, such as runs on past days)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.types.json import Jsonb

from infrastructure.settings import Settings
from projections.runs import TERMINAL
from tests.support.plugins import TEST_PLUGINS

EXECUTING = frozenset({"relay", "projector", "executor"})


def executing(settings: Settings) -> Settings:
    """Settings for running_app(..., roles=EXECUTING): the Test plugins loaded."""
    return replace(settings, plugins=TEST_PLUGINS, heartbeat_interval=0.5, heartbeat_timeout=3)


def step(name: str, plugin: str, *depends_on: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "plugin": plugin, "config": config, "depends_on": list(depends_on)}


async def make_pipeline(
    client: Any, headers: dict[str, str], name: str, steps: list[dict[str, Any]]
) -> str:
    """The new pipeline's id, once the pipelines read model shows it."""
    response = await client.post(
        "/api/v1/pipelines", json={"name": name, "steps": steps}, headers=headers
    )
    assert response.status_code == 201, response.text
    pipeline_id, position = response.json()["id"], response.json()["position"]
    shown = await client.get(
        f"/api/v1/pipelines/{pipeline_id}", params={"min_position": position}, headers=headers
    )
    assert shown.status_code == 200, shown.text
    return str(pipeline_id)


async def trigger(client: Any, headers: dict[str, str], pipeline_id: str) -> str:
    response = await client.post(
        f"/api/v1/pipelines/{pipeline_id}/runs", json={"params": {"k": "v"}}, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def finished(client: Any, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    """The run from the read model once it has reached a terminal status."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        response = await client.get(f"/api/v1/runs/{run_id}", headers=headers)
        if response.status_code == 200 and response.json()["status"] in TERMINAL:
            return dict(response.json())
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.05)


async def run_to_end(client: Any, headers: dict[str, str], pipeline_id: str) -> dict[str, Any]:
    return await finished(client, headers, await trigger(client, headers, pipeline_id))


_INSERT = (
    "INSERT INTO runs (id, tenant_id, pipeline_id, pipeline_name, revision, status,"
    " trigger_kind, params, error, created_by, queued_at, started_at, finished_at,"
    " duration_ms, version, position)"
    " VALUES (%s, %s, %s, %s, 1, %s, 'user', %s, %s, 'seed', %s, %s, %s, %s, 1, 1)"
)


async def seed_run(
    database_url: str,
    tenant_id: str,
    pipeline_id: UUID,
    queued_at: datetime,
    status: str,
    duration_ms: float | None = None,
    pipeline_name: str = "seeded",
    error: str | None = None,
) -> str:
    """A row in the runs read model as the projection would leave it (no events: the
    read model is what statistics and exports read)."""
    run_id = uuid4()
    started = queued_at if duration_ms is not None else None
    ended = None if duration_ms is None else queued_at + timedelta(milliseconds=duration_ms)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            _INSERT,
            (
                run_id,
                tenant_id,
                pipeline_id,
                pipeline_name,
                status,
                Jsonb({}),
                error,
                queued_at,
                started,
                ended,
                duration_ms,
            ),
        )
    return str(run_id)


async def seed_many_runs(
    database_url: str, tenant_id: str, pipeline_id: UUID, count: int, first: datetime
) -> None:
    """`count` succeeded runs, three per second from `first` (ties on queued_at test the
    keyset's tie-break), each with two steps: `a` succeeded, `b` failed."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO runs (id, tenant_id, pipeline_id, pipeline_name, revision, status,"
            " trigger_kind, params, created_by, queued_at, version, position)"
            " SELECT gen_random_uuid(), %s, %s, 'bulk', 1, 'succeeded', 'user', '{}', 'seed',"
            " %s + (n / 3) * interval '1 second', 1, n FROM generate_series(1, %s) n",
            (tenant_id, pipeline_id, first, count),
        )
        await conn.execute(
            "INSERT INTO run_steps (run_id, name, ordinal, plugin, depends_on, status, attempts)"
            " SELECT id, s.name, s.ordinal, 'Test.emit', s.deps, s.status, s.attempts"
            " FROM runs, (VALUES ('a', 0, '{}'::text[], 'succeeded', 1),"
            " ('b', 1, '{a}'::text[], 'failed', 2)) s(name, ordinal, deps, status, attempts)"
            " WHERE runs.pipeline_id = %s",
            (pipeline_id,),
        )
