"""The scheduler role riding out a PostgreSQL outage (through a TCP proxy the test cuts):
its passes fail while the database is away, it reconnects when it returns, and what came
due meanwhile meets the misfire policy — the clock the test moves makes the outage as
long as the policy needs (minutes) while the test waits seconds."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from api.bootstrap import build_container
from application.job_firing import JobFiring
from infrastructure.scheduler_role import SchedulerRole
from infrastructure.settings import Settings
from tests.integration.api_client import create_pipeline, running_app
from tests.integration.deployment_client import new_tenant
from tests.integration.test_database_outage import _target, _through
from tests.integration.test_scheduler_role import Clock, _at, _job, _shown
from tests.support.tcp_proxy import tcp_proxy


async def _until(client: Any, editor: dict[str, str], job_id: str, fired: int) -> dict[str, Any]:
    for _ in range(400):
        shown = await _shown(client, editor, job_id)
        if shown["fired"] >= fired:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} fired {shown['fired']} times, not {fired}")


async def test_after_an_outage_the_scheduler_goes_on_and_applies_the_misfire_policy(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with running_app(settings) as client:
        _, editor, _ = await new_tenant(client, settings)
        pipeline = await create_pipeline(client, editor, "alpha")
        # No executor runs them: runs stay queued, so overlaps are allowed here.
        allow = {"overlap_policy": "allow"}
        # The counts below take both jobs' minutes to be the same ones: made in one
        # minute, not on either side of a minute's end.
        if (second := datetime.now(UTC).second) >= 50:
            await asyncio.sleep(60.5 - second)
        skip = await _job(client, editor, pipeline["id"], name="skip", **allow)
        once = await _job(
            client, editor, pipeline["id"], name="once", misfire_policy="run_once", **allow
        )
        assert _at(skip, 1) == _at(once, 1), (skip["created_at"], once["created_at"])
        clock = Clock()
        clock.now = _at(skip, 1) + timedelta(seconds=1)
        with tcp_proxy(_target(settings.database_url)) as proxy:
            url = _through(proxy, settings.database_url)
            container = build_container(
                dataclasses.replace(settings, database_url=url), url, settings.nats_url
            )
            firing = JobFiring(container.store, container.pipelines, container.runs, clock=clock)
            role = SchedulerRole(url, firing, clock=clock, interval=0.1)
            stop = asyncio.Event()
            task = asyncio.create_task(role.run(stop))
            try:
                for job in (skip, once):
                    await _until(client, editor, job["id"], 1)  # minute 1, on time
                proxy.cut()
                clock.now = _at(skip, 5) + timedelta(seconds=1)  # 2, 3, 4 are now missed
                await asyncio.sleep(1.5)  # passes fail meanwhile
                proxy.restore()
                skipped = await _until(client, editor, skip["id"], 2)
                caught_up = await _until(client, editor, once["id"], 3)
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
                container.close()
        assert (skipped["fired"], skipped["missed"]) == (2, 3)  # minute 5 only
        assert (caught_up["fired"], caught_up["missed"]) == (3, 2)  # 4 (the latest), 5
