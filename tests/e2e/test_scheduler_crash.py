"""Two `norn scheduler` processes sharing per-second jobs; the one found in the middle of
a pass is SIGKILLed, preferably after its runs' append committed and before its
bookkeeping did (tests/e2e/scheduler_processes.py: kill_in_a_pass), and the other
carries on: every scheduled time of every job runs exactly once, and the bookkeeping
agrees.

The app (relay and projector, no executor: the runs stay queued) runs in-process; the
schedulers are real processes on the test's database. Checked from the event store (the
RunQueued events, their trigger.scheduled_for) and job_schedules:

* per job, its runs' scheduled_for are exactly every whole second from the first one
  after the job's creation to the last one fired: no duplicate, no gap, none missing at
  the start (the schedulers start after the jobs exist: those times are fired late,
  well within the 60 s misfire grace), and nothing but whole seconds;
* the last one is at most END_SLACK before the survivor was stopped: the survivor took
  over the killed scheduler's jobs and kept every job going to the end;
* job_schedules: fired == the job's runs, missed == skipped == refused == 0."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from infrastructure.settings import Settings
from tests.e2e.scheduler_processes import app_name, kill_in_a_pass, scheduler_process
from tests.integration.api_client import create_pipeline, running_app
from tests.integration.deployment_client import read_at
from tests.integration.run_helpers import poll, run_events, tenant_editor

JOBS = 20
FIRST_PHASE = 4.0  # seconds both schedulers fire before one is killed
SECOND_PHASE = 4.0  # seconds the survivor fires alone
END_SLACK = timedelta(seconds=3)  # a pass every 0.25 s; generous for a loaded machine
BASE = "/api/v1/scheduler/jobs"


def scheduled_runs(database_url: str) -> tuple[dict[str, list[datetime]], Counter[str]]:
    """Each job's runs' scheduled_for (in the store's order), and how many RunQueued
    events each run id has."""
    by_job: dict[str, list[datetime]] = defaultdict(list)
    queued: Counter[str] = Counter()
    for name, event in run_events(database_url):
        if name != "RunQueued":
            continue
        queued[event["originator_id"]] += 1
        trigger = event["trigger"]
        assert trigger["kind"] == "job", trigger
        by_job[trigger["id"]].append(datetime.fromisoformat(trigger["scheduled_for"]))
    return by_job, queued


def any_run(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        query = "SELECT 1 FROM norn_events WHERE topic = 'domain.run:RunQueued' LIMIT 1"
        return conn.execute(query).fetchone() is not None


def first_second_after(moment: datetime) -> datetime:
    return moment.replace(microsecond=0) + timedelta(seconds=1)


async def test_a_killed_scheduler_loses_and_doubles_no_fire(
    settings: Settings, tmp_path: Path
) -> None:
    database_url = settings.database_url or ""
    async with running_app(settings) as client:
        tenant_id, editor, root = await tenant_editor(client, settings)
        quotas = await client.put(
            f"/api/v1/tenants/{tenant_id}/quotas",
            json={"max_jobs": 1000, "max_runs_per_day": 1_000_000},
            headers=root,
        )
        assert quotas.status_code == 200, quotas.text
        pipeline = await create_pipeline(client, editor, "every-second")
        position = 0
        for i in range(JOBS):
            made = await client.post(
                BASE,
                json={
                    "name": f"tick-{i}",
                    "target": {"pipeline_id": pipeline["id"]},
                    "cron_expr": "* * * * * *",
                    "overlap_policy": "allow",  # no executor: every run stays queued
                },
                headers=editor,
            )
            assert made.status_code == 201, made.text
            position = max(position, made.json()["position"])
        await read_at(client, editor, BASE, position)  # the jobs read model has them all

        with (
            scheduler_process(settings, tmp_path / "a.log") as a,
            scheduler_process(settings, tmp_path / "b.log") as b,
        ):

            async def fired() -> bool | None:
                return await asyncio.to_thread(any_run, database_url) or None

            await poll(fired, "the schedulers' first fire")
            await asyncio.sleep(FIRST_PHASE)
            # The one found holding due jobs dies: with jobs every second and passes every
            # 0.25 s, one scheduler may well take them all, pass after pass.
            named = {app_name(tmp_path / "a.log"): a, app_name(tmp_path / "b.log"): b}
            killed = await asyncio.to_thread(kill_in_a_pass, database_url, named, 10.0)
            assert killed is not None, "no scheduler was ever seen in the middle of a pass"
            victim, doing = killed
            print(f"killed pid {victim.pid} in a pass, at: {doing[:60]}")
            assert victim.returncode == -signal.SIGKILL
            survivor, survivor_log = (b, "b.log") if victim is a else (a, "a.log")
            await asyncio.sleep(SECOND_PHASE)
            assert survivor.poll() is None, "the survivor died"
            stopped_at = datetime.now(UTC)
            survivor.send_signal(signal.SIGTERM)  # it finishes its pass, then exits
            assert await asyncio.to_thread(survivor.wait, 20) == 0
        survivor_output = (tmp_path / survivor_log).read_text(errors="replace")
        assert "Traceback" not in survivor_output and "ERROR" not in survivor_output, (
            survivor_output
        )

        by_job, queued = scheduled_runs(database_url)
        assert [run for run, n in queued.items() if n != 1] == []
        with psycopg.connect(database_url) as conn:
            created = dict(conn.execute("SELECT id::text, created_at FROM jobs").fetchall())
            counters: dict[str, Any] = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT job_id::text, fired, missed, skipped, refused FROM job_schedules"
                ).fetchall()
            }
        assert len(created) == JOBS and set(by_job) == set(created) == set(counters)
        for job_id, times in by_job.items():
            duplicates = [t for t, n in Counter(times).items() if n > 1]
            assert duplicates == [], f"job {job_id}: fired twice for {duplicates}"
            ordered = sorted(times)
            start = first_second_after(created[job_id])
            expected = [start + timedelta(seconds=k) for k in range(len(ordered))]
            missing = sorted(set(expected) - set(ordered))
            assert ordered == expected, (
                f"job {job_id} (created {created[job_id]}): not every second from {start} "
                f"to {ordered[-1]} once; missing {missing}, extra "
                f"{sorted(set(ordered) - set(expected))}"
            )
            assert ordered[-1] >= stopped_at - END_SLACK, (
                f"job {job_id}: last fire {ordered[-1]}, survivor stopped at {stopped_at}"
            )
            assert counters[job_id] == (len(ordered), 0, 0, 0), (job_id, counters[job_id])
        # The window covers both phases: before and after the kill, for every job.
        spans = [max(t) - min(t) for t in by_job.values()]
        assert min(spans) >= timedelta(seconds=FIRST_PHASE + SECOND_PHASE - 1), spans
