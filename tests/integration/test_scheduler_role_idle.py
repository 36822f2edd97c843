"""The scheduler role at rest: a pass looks for new and changed jobs (two statements that
scan every job's row) only when the jobs read model has moved since its last look, and
looks again as soon as a job is made or changed. Real PostgreSQL and the real app; the
statements a pass sends are counted by a psycopg cursor factory."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row

from infrastructure.scheduler_role import SchedulerRole
from infrastructure.settings import Settings
from tests.integration.api_client import create_pipeline
from tests.integration.deployment_client import read_at
from tests.integration.test_scheduler_role import BASE, Clock, scheduler, world

LOOKS = ("INSERT INTO job_schedules", "s.spec_version <> j.version")


class _Counted(psycopg.Cursor[Any]):
    sent: list[str]

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        type(self).sent.append(str(query))
        return super().execute(query, *args, **kwargs)


def _looked(settings: Settings, role: SchedulerRole) -> bool:
    """One pass; whether it looked for new and changed jobs."""
    _Counted.sent = []
    with psycopg.connect(
        settings.database_url or "", row_factory=dict_row, autocommit=True, cursor_factory=_Counted
    ) as conn:
        role.run_pass(conn)
    return any(look in sent for sent in _Counted.sent for look in LOOKS)


def _planned(settings: Settings, job_id: str) -> tuple[int, int]:
    """The job's bookkeeping row: the version it was planned at, and the minute it is due."""
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute(
            "SELECT spec_version, next_due FROM job_schedules WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1].minute


async def test_an_idle_pass_skips_the_look_for_new_and_changed_jobs(settings: Settings) -> None:
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        body = {
            "name": "hourly",
            "target": {"pipeline_id": pipeline["id"]},
            "cron_expr": "0 * * * *",
        }
        made = await client.post(BASE, json=body, headers=editor)
        assert made.status_code == 201, made.text
        job = await read_at(client, editor, f"{BASE}/{made.json()['id']}", made.json()["position"])
        with scheduler(settings, Clock()) as role:
            assert await asyncio.to_thread(_looked, settings, role)  # the new job
            assert _planned(settings, job["id"]) == (job["version"], 0)
            assert not await asyncio.to_thread(_looked, settings, role)  # nothing moved

            changed = await client.put(
                f"{BASE}/{job['id']}", json={**body, "cron_expr": "30 * * * *"}, headers=editor
            )
            assert changed.status_code == 200, changed.text
            await read_at(client, editor, f"{BASE}/{job['id']}", changed.json()["position"])
            assert await asyncio.to_thread(_looked, settings, role)  # the change
            assert _planned(settings, job["id"]) == (changed.json()["version"], 30)
            assert not await asyncio.to_thread(_looked, settings, role)
