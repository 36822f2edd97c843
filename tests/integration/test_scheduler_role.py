"""The scheduler role's passes on real PostgreSQL, with a clock the test moves (no sleeping
through minutes): jobs made over HTTP and projected by the real app, passes run by
SchedulerRole.run_pass as the role runs them; counters, last run and runs read back over
HTTP. Two schedulers passing at once fire each time once; disabling, re-enabling and a
suspension meet the misfire policy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg.rows import dict_row

from api.bootstrap import build_container
from application.fire_plan import fire_run_id
from application.job_firing import JobFiring
from domain.events import CommandContext
from domain.tenant import Tenant
from infrastructure.mapper import decode_state
from infrastructure.scheduler_role import SchedulerRole
from infrastructure.settings import Settings
from tests.integration.api_client import create_pipeline, running_app
from tests.integration.deployment_client import Headers, new_tenant, read_at

BASE = "/api/v1/scheduler/jobs"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def scheduler(
    settings: Settings, clock: Clock, batch: int = 500, **options: Any
) -> Iterator[SchedulerRole]:
    assert settings.database_url and settings.nats_url
    container = build_container(settings, settings.database_url, settings.nats_url)
    try:
        firing = JobFiring(container.store, container.pipelines, container.runs, clock=clock)
        yield SchedulerRole(settings.database_url, firing, clock=clock, batch=batch, **options)
    finally:
        container.close()


def run_pass(settings: Settings, role: SchedulerRole) -> None:
    with psycopg.connect(
        settings.database_url or "", row_factory=dict_row, autocommit=True
    ) as conn:
        while role.run_pass(conn):
            pass


@asynccontextmanager
async def world(settings: Settings) -> AsyncIterator[tuple[AsyncTestClient, Headers, str]]:
    async with running_app(settings) as client:
        tenant_id, editor, _ = await new_tenant(client, settings)
        yield client, editor, tenant_id


async def _job(client: Any, editor: Headers, pipeline_id: str, **body: Any) -> dict[str, Any]:
    made = await client.post(
        BASE,
        json={
            "name": body.pop("name", "minutely"),
            "target": {"pipeline_id": pipeline_id},
            "cron_expr": body.pop("cron_expr", "* * * * *"),
            **body,
        },
        headers=editor,
    )
    assert made.status_code == 201, made.text
    return dict(
        await read_at(client, editor, f"{BASE}/{made.json()['id']}", made.json()["position"])
    )


async def _shown(client: Any, editor: Headers, job_id: str) -> dict[str, Any]:
    response = await client.get(f"{BASE}/{job_id}", headers=editor)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _at(job: dict[str, Any], minutes: float) -> datetime:
    created = datetime.fromisoformat(job["created_at"])
    return created.replace(second=0, microsecond=0) + timedelta(minutes=minutes)


async def test_a_pass_fires_what_is_due_and_counts_what_it_missed(settings: Settings) -> None:
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        job = await _job(client, editor, pipeline["id"])
        clock = Clock()
        with scheduler(settings, clock) as role:
            # Two minutes later and a bit: the first minute is past the 60 s grace.
            clock.now = _at(job, 2) + timedelta(seconds=5)
            await asyncio.to_thread(run_pass, settings, role)
            await asyncio.to_thread(run_pass, settings, role)  # again: nothing new
        shown = await _shown(client, editor, job["id"])
        assert (shown["fired"], shown["missed"], shown["skipped"]) == (1, 1, 0), shown
        assert shown["last_run"] == _at(job, 2).isoformat().replace("+00:00", "Z")
        for _ in range(100):  # the runs read model follows the store
            runs = await client.get("/api/v1/runs", params={"job_id": job["id"]}, headers=editor)
            if runs.json()["items"]:
                break
            await asyncio.sleep(0.05)
        [run] = runs.json()["items"]
        assert run["id"] == shown["last_run_id"]
        assert run["trigger"] == {
            "kind": "job",
            "id": job["id"],
            "scheduled_for": _at(job, 2).isoformat().replace("+00:00", "Z"),
        }


async def test_two_schedulers_passing_at_once_fire_each_time_once(settings: Settings) -> None:
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        jobs = [await _job(client, editor, pipeline["id"], name=f"job-{i}") for i in range(10)]
        clock = Clock()
        clock.now = max(_at(job, 1) for job in jobs) + timedelta(seconds=1)
        with scheduler(settings, clock) as one, scheduler(settings, clock) as two:
            barrier = threading.Barrier(2)

            def race(role: SchedulerRole) -> None:
                barrier.wait()
                run_pass(settings, role)

            await asyncio.gather(asyncio.to_thread(race, one), asyncio.to_thread(race, two))
        fired = [(await _shown(client, editor, job["id"]))["fired"] for job in jobs]
        assert fired == [1] * 10  # each job planned by one of the two
        with psycopg.connect(settings.database_url or "") as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT originator_id) FROM norn_events"
                " WHERE topic LIKE 'domain.run:RunQueued%%'"
            ).fetchone()
        assert row is not None and row[0] == row[1] == sum(fired)  # one run per time


async def test_a_pass_that_loses_the_race_for_the_usage_appends_again_at_once(
    settings: Settings,
) -> None:
    """Another append takes the tenant's day usage between the pass's read of it and its
    append: the store names the usage as the loser, so the pass appends its runs again
    with the usage read afresh, without asking which of its runs exist."""
    assert settings.database_url and settings.nats_url
    async with world(settings) as (client, editor, tenant_id):
        pipeline = await create_pipeline(client, editor, "alpha")
        jobs = [await _job(client, editor, pipeline["id"], name=f"job-{i}") for i in range(3)]
        clock = Clock()
        clock.now = max(_at(job, 1) for job in jobs) + timedelta(seconds=1)
        mine = build_container(settings, settings.database_url, settings.nats_url)
        other = build_container(settings, settings.database_url, settings.nats_url)
        appends: list[int] = []
        looked_up: list[tuple[UUID, ...]] = []
        append, current = mine.store.append, mine.store.current

        def interloping_append(*aggregates: Any, **kwargs: Any) -> int | None:
            appends.append(len(aggregates))
            if len(appends) == 1:  # another scheduler's append goes first
                tenant = other.store.find(Tenant, UUID(tenant_id))
                assert tenant is not None
                ctx = CommandContext("system:test", correlation_id="interloper")
                with other.runs.take_run_of_day(tenant, ctx) as usage:
                    other.store.append(usage)
            return append(*aggregates, **kwargs)

        def recorded_current(*ids: UUID, **kwargs: Any) -> dict[UUID, Any]:
            looked_up.append(ids)
            return current(*ids, **kwargs)

        mine.store.append = interloping_append  # type: ignore[method-assign]
        mine.store.current = recorded_current  # type: ignore[method-assign]
        try:
            firing = JobFiring(mine.store, mine.pipelines, mine.runs, clock=clock)
            role = SchedulerRole(settings.database_url, firing, clock=clock)
            await asyncio.to_thread(run_pass, settings, role)
        finally:
            mine.close()
            other.close()
        assert appends == [4, 4]  # the usage and three runs, twice
        assert looked_up == []
        fired = [(await _shown(client, editor, job["id"]))["fired"] for job in jobs]
        assert fired == [1, 1, 1]


async def test_a_waiting_fire_is_fired_by_the_first_pass_after_its_run_ends(
    settings: Settings,
) -> None:
    """queue_one: a fire that came while the previous run was active waits (no time is
    due any more), and the first pass after that run ends fires it."""
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        job = await _job(client, editor, pipeline["id"], overlap_policy="queue_one")
        clock = Clock()
        with scheduler(settings, clock) as role:
            clock.now = _at(job, 1) + timedelta(seconds=1)
            await asyncio.to_thread(run_pass, settings, role)  # fires: no executor runs it
            clock.now = _at(job, 2) + timedelta(seconds=1)
            await asyncio.to_thread(run_pass, settings, role)  # the first run is queued
            shown = await _shown(client, editor, job["id"])
            assert (shown["fired"], shown["skipped"]) == (1, 0), shown
            cancelled = await client.post(
                f"/api/v1/runs/{shown['last_run_id']}/cancel", headers=editor
            )
            assert cancelled.status_code == 202, cancelled.text
            clock.now += timedelta(seconds=10)  # nothing is due now: only the waiting fire
            await asyncio.to_thread(run_pass, settings, role)
        shown = await _shown(client, editor, job["id"])
        assert (shown["fired"], shown["skipped"]) == (2, 0), shown
        assert shown["last_run"] == _at(job, 2).isoformat().replace("+00:00", "Z")


async def test_due_jobs_come_before_waiting_fires_and_only_they_fill_a_pass(
    settings: Settings,
) -> None:
    """A pass takes due jobs first, and a waiting fire whose run goes on does not make
    the pass full: with room for one job, passes stop once only the waiting one is left
    (counted with it, they would follow each other without end)."""
    assert settings.database_url
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        waiting = await _job(client, editor, pipeline["id"], name="w", overlap_policy="queue_one")
        other = await _job(client, editor, pipeline["id"], name="o", overlap_policy="allow")
        clock = Clock()
        with scheduler(settings, clock, batch=1) as role:  # room for one job a pass
            passes = []
            for minute in (1, 2):
                clock.now = max(_at(waiting, minute), _at(other, minute)) + timedelta(seconds=1)
                passes.append(await asyncio.to_thread(bounded_passes, settings, role, 10))
        # Minute 1: both fire (two full passes, then an empty one). Minute 2: both due
        # again, `w` now waiting; then one pass holding only the waiting fire, not full.
        assert passes == [3, 3]
        shown = await _shown(client, editor, waiting["id"])
        assert (shown["fired"], shown["skipped"]) == (1, 0), shown
        assert (await _shown(client, editor, other["id"]))["fired"] == 2


def bounded_passes(settings: Settings, role: SchedulerRole, at_most: int) -> int:
    """Passes until one is not full, at most `at_most`: how many ran."""
    with psycopg.connect(
        settings.database_url or "", row_factory=dict_row, autocommit=True
    ) as conn:
        for n in range(1, at_most + 1):
            if not role.run_pass(conn):
                return n
    return at_most


async def test_reenabling_applies_the_misfire_policy_to_what_it_missed(
    settings: Settings,
) -> None:
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        once = await _job(client, editor, pipeline["id"], name="once", misfire_policy="run_once")
        every = await _job(
            client, editor, pipeline["id"], name="all", misfire_policy="run_all", max_catchup=3
        )
        skip = await _job(client, editor, pipeline["id"], name="skip")
        clock = Clock()
        with scheduler(settings, clock) as role:
            for job in (once, every, skip):
                off = await client.post(f"{BASE}/{job['id']}/disable", headers=editor)
                assert off.status_code == 200, off.text
            await read_at(client, editor, BASE, off.json()["position"])
            clock.now = _at(once, 10) + timedelta(seconds=1)
            await asyncio.to_thread(run_pass, settings, role)  # disabled: nothing
            for job in (once, every, skip):
                on = await client.post(f"{BASE}/{job['id']}/enable", headers=editor)
                assert on.status_code == 200, on.text
            await read_at(client, editor, BASE, on.json()["position"])
            await asyncio.to_thread(run_pass, settings, role)
        counts = {}
        for job in (once, every, skip):
            shown = await _shown(client, editor, job["id"])
            counts[job["name"]] = (shown["fired"], shown["missed"])
        # Minutes 1..10 were due; minute 10 is on time (1 s ago), 1..9 were missed.
        assert counts["once"] == (2, 8)  # the latest missed (9) and the on-time one (10)
        assert counts["all"] == (4, 6)  # the oldest three missed (1, 2, 3) and minute 10
        assert counts["skip"] == (1, 9)


async def test_a_suspended_tenants_jobs_wait_for_reactivation(settings: Settings) -> None:
    async with world(settings) as (client, editor, tenant_id):
        pipeline = await create_pipeline(client, editor, "alpha")
        job = await _job(client, editor, pipeline["id"], misfire_policy="run_once")
        root = await _root(client, settings)
        clock = Clock()
        with scheduler(settings, clock) as role:
            await _status(client, root, tenant_id, "suspended")
            clock.now = _at(job, 5) + timedelta(seconds=1)
            await asyncio.to_thread(run_pass, settings, role)
            assert (await _shown(client, editor, job["id"]))["fired"] == 0
            await _status(client, root, tenant_id, "active")
            await asyncio.to_thread(run_pass, settings, role)
        shown = await _shown(client, editor, job["id"])
        assert (shown["fired"], shown["missed"]) == (2, 3)


@pytest.mark.parametrize("off", ["job disabled", "tenant suspended"])
async def test_what_a_sub_minute_job_missed_while_off_is_not_fired_by_the_grace(
    settings: Settings, off: str
) -> None:
    # Every 10 s, `skip`. The pass comes half a second after the job is on again, the
    # job's bookkeeping 55 s back as if it had been off that long: its five or six times
    # then were all within the 60 s grace, and none of them may fire.
    async with world(settings) as (client, editor, tenant_id):
        pipeline = await create_pipeline(client, editor, "alpha")
        job = await _job(client, editor, pipeline["id"], cron_expr="* * * * * */10")
        root = await _root(client, settings)
        clock = Clock()
        # At the job's making: nothing is due yet, however long the login took (a 10 s
        # mark passed meanwhile was fired by this pass, once in a loaded suite).
        clock.now = datetime.fromisoformat(job["created_at"])
        with scheduler(settings, clock) as role:
            await asyncio.to_thread(run_pass, settings, role)  # its bookkeeping row
            await _switch(client, (editor, root), tenant_id, job["id"], off, on=False)
            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                conn.execute(
                    "UPDATE job_schedules SET cursor = cursor - interval '55 seconds',"
                    " next_due = cursor - interval '55 seconds' WHERE job_id = %s",
                    (job["id"],),
                )
            await _switch(client, (editor, root), tenant_id, job["id"], off, on=True)
            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                on_since, cursor = conn.execute(
                    "SELECT greatest(j.enabled_at, t.active_since), s.cursor FROM jobs j"
                    " JOIN tenants t ON t.id::text = j.tenant_id"
                    " JOIN job_schedules s ON s.job_id = j.id WHERE j.id = %s",
                    (job["id"],),
                ).fetchone()
            clock.now = on_since + timedelta(seconds=0.5)
            await asyncio.to_thread(run_pass, settings, role)
        due = every_ten_seconds(cursor, clock.now)
        on_time = [t for t in due if t >= on_since]
        shown = await _shown(client, editor, job["id"])
        assert len(due) - len(on_time) >= 5
        assert (shown["fired"], shown["missed"]) == (len(on_time), len(due) - len(on_time))


async def _switch(
    client: Any, who: tuple[Headers, Headers], tenant_id: str, job_id: str, off: str, *, on: bool
) -> None:
    """The job enabled or disabled (by its editor), or its tenant reactivated or
    suspended (by the platform admin), and the read model there."""
    editor, root = who
    if off == "job disabled":
        changed = await client.post(
            f"{BASE}/{job_id}/{'enable' if on else 'disable'}", headers=editor
        )
        assert changed.status_code == 200, changed.text
        await read_at(client, editor, BASE, changed.json()["position"])
    else:
        await _status(client, root, tenant_id, "active" if on else "suspended")


def every_ten_seconds(cursor: datetime, now: datetime) -> list[datetime]:
    """The whole multiples of 10 s in (cursor, now]."""
    first = cursor.replace(microsecond=0) + timedelta(seconds=10 - cursor.second % 10)
    return [t for t in (first + timedelta(seconds=10 * i) for i in range(8)) if cursor < t <= now]


async def _root(client: Any, settings: Settings) -> Headers:
    from tests.integration.api_client import login

    return await login(client, settings.admin_username or "", settings.admin_password or "")


async def _status(client: Any, root: Headers, tenant_id: str, status: str) -> None:
    changed = await client.put(
        f"/api/v1/tenants/{tenant_id}",
        json={"status": status, "status_reason": "test" if status != "active" else ""},
        headers=root,
    )
    assert changed.status_code == 200, changed.text
    await read_at(client, root, f"/api/v1/tenants/{tenant_id}", changed.json()["position"])


async def test_a_job_whose_pipeline_is_deleted_is_disabled_with_the_reason(
    settings: Settings,
) -> None:
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "alpha")
        job = await _job(client, editor, pipeline["id"], cron_expr="0 3 * * *")
        deleted = await client.delete(f"/api/v1/pipelines/{pipeline['id']}", headers=editor)
        assert deleted.status_code == 200, deleted.text
        await read_at(client, editor, "/api/v1/pipelines", deleted.json()["position"])
        clock = Clock()
        with scheduler(settings, clock) as role:
            await asyncio.to_thread(run_pass, settings, role)  # long before its next fire
        history = await client.get(f"{BASE}/{job['id']}/history", headers=editor)
        last = history.json()["items"][-1]
        assert (last["event"], last["data"]["reason"]) == (
            "disabled",
            f"pipeline {pipeline['id']} was deleted",
        )
        assert last["actor"] == "system:scheduler"


async def test_in_a_burst_new_jobs_are_looked_for_once_an_interval(settings: Settings) -> None:
    """Full batches fired back to back (a burst) are not each preceded by a scan for new
    and changed jobs; the next scan comes once the interval is over."""
    assert settings.database_url and settings.nats_url
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "burst")
        first = await _job(client, editor, pipeline["id"], name="first")
        await _job(client, editor, pipeline["id"], name="second")
        clock = Clock()
        container = build_container(settings, settings.database_url, settings.nats_url)
        try:
            firing = JobFiring(container.store, container.pipelines, container.runs, clock=clock)
            role = SchedulerRole(settings.database_url, firing, clock=clock, interval=1.0, batch=2)
            with psycopg.connect(
                settings.database_url, row_factory=dict_row, autocommit=True
            ) as conn:

                def rows() -> int:
                    found = conn.execute("SELECT count(*) AS n FROM job_schedules").fetchone()
                    return int(found["n"]) if found else 0

                def run_pass() -> bool:
                    return role.run_pass(conn)

                clock.now = _at(first, 0)  # nothing due: both planned
                while await asyncio.to_thread(run_pass):
                    pass
                assert rows() == 2
                clock.now = _at(first, 1) + timedelta(seconds=1)
                assert await asyncio.to_thread(run_pass)  # both fired: a full batch
                await _job(client, editor, pipeline["id"], name="third")
                await asyncio.to_thread(run_pass)  # in the burst: no scan
                assert rows() == 2
                await asyncio.sleep(1.1)
                await asyncio.to_thread(run_pass)
                assert rows() == 3
        finally:
            container.close()


async def test_the_role_waits_until_the_next_due_time_not_a_whole_interval(
    settings: Settings,
) -> None:
    """Between passes the role sleeps the rest of its interval, or less when a job falls
    due sooner; rows left due (a suspended tenant's) do not make it spin."""
    assert settings.database_url and settings.nats_url
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "soon")
        job = await _job(client, editor, pipeline["id"])
        clock = Clock()
        with scheduler(settings, clock) as role:
            clock.now = _at(job, 1) - timedelta(seconds=30)
            await asyncio.to_thread(run_pass, settings, role)  # planned: due at minute 1
            with psycopg.connect(
                settings.database_url, row_factory=dict_row, autocommit=True
            ) as conn:
                clock.now = _at(job, 1) - timedelta(seconds=0.1)
                wait, ahead = role.next_wake(conn, 0.25)
                assert abs(wait - 0.101) < 1e-6 and ahead is None
                clock.now = _at(job, 1) - timedelta(seconds=10)
                assert role.next_wake(conn, 0.25) == (0.25, None)  # not due within it
                clock.now = _at(job, 1) + timedelta(seconds=1)  # due, not yet fired
                assert role.next_wake(conn, 0.25) == (0.25, None)
        with scheduler(settings, clock, lead=2.0) as role:
            with psycopg.connect(
                settings.database_url, row_factory=dict_row, autocommit=True
            ) as conn:
                # With a lead, the pass after the wait plans the jobs due at that time.
                clock.now = _at(job, 1) - timedelta(seconds=2.1)
                assert role.next_wake(conn, 0.25) == (pytest.approx(0.1), _at(job, 1))
                clock.now = _at(job, 1) - timedelta(seconds=1)
                assert role.next_wake(conn, 0.25) == (0.0, _at(job, 1))
                clock.now = _at(job, 1) - timedelta(seconds=3)
                assert role.next_wake(conn, 0.25) == (0.25, None)
                # Another scheduler holds every job due then: this one takes up that
                # time once, then waits with its passes instead of asking again at once.
                clock.now = _at(job, 1) - timedelta(seconds=1)
                with psycopg.connect(settings.database_url) as other:
                    other.execute("SELECT 1 FROM job_schedules FOR UPDATE")
                    await asyncio.to_thread(role.run_ahead, conn, _at(job, 1))
                assert role.next_wake(conn, 0.25) == (0.25, None)
                assert (await _shown(client, editor, job["id"]))["fired"] == 0


async def test_with_a_lead_a_burst_is_planned_before_its_time_and_queued_at_it(
    settings: Settings,
) -> None:
    """run_ahead holds the jobs due at a time, plans them batch by batch and builds their
    runs, queues nothing until the time comes, then queues them stamped with that moment.
    A job whose definition changed meanwhile is left as it was, for the next look to plan
    again: the pass after fires it, once. The passes go on while it waits: a job due
    before that time fires at its own."""
    assert settings.database_url
    url = settings.database_url
    if datetime.now(UTC).second >= 50:  # every job made in the same minute
        await asyncio.sleep(61 - datetime.now(UTC).second)
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "burst")
        jobs = [await _job(client, editor, pipeline["id"], name=f"job-{i}") for i in range(3)]
        soon = await _job(client, editor, pipeline["id"], name="soon", cron_expr="* * * * * 59")
        at = _at(jobs[0], 1)
        runs = [fire_run_id(job["id"], at) for job in jobs]
        soon_run = fire_run_id(soon["id"], at - timedelta(seconds=1))
        clock = Clock()
        slept: list[float] = []

        def queued(ids: list[UUID] = runs) -> dict[UUID, str]:
            with psycopg.connect(url) as conn:
                found = conn.execute(
                    "SELECT originator_id, state FROM norn_events"
                    " WHERE originator_id = ANY(%s) AND originator_version = 1",
                    (ids,),
                ).fetchall()
            return {run_id: decode_state(state)["timestamp"] for run_id, state in found}

        def iso(moment: datetime) -> str:
            return moment.isoformat().replace("+00:00", "Z")

        loop = asyncio.get_running_loop()

        async def change(job_id: str) -> None:  # off and on again: a new version
            for action in ("disable", "enable"):
                done = await client.post(f"{BASE}/{job_id}/{action}", headers=editor)
                assert done.status_code == 200, done.text
            await read_at(client, editor, f"{BASE}/{job_id}", done.json()["position"])

        soon_queued: list[bool] = []

        def sleep(seconds: float) -> bool:
            assert queued() == {}  # planned and built: nothing queued before the time
            soon_queued.append(bool(queued([soon_run])))
            if not slept:
                asyncio.run_coroutine_threadsafe(change(jobs[2]["id"]), loop).result(60)
            slept.append(seconds)
            clock.now += timedelta(seconds=seconds)
            return True

        with scheduler(settings, clock, batch=2, lead=2.0, sleep=sleep) as role:
            clock.now = at - timedelta(seconds=30)
            await asyncio.to_thread(run_pass, settings, role)  # planned: due at minute 1
            clock.now = at - timedelta(seconds=1.5)
            with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
                await asyncio.to_thread(role.run_ahead, conn, at)
            assert slept == [0.25] * 6  # a pass after each, for what falls due meanwhile
            # Fired by the pass at its time (after the second wait), not with the burst.
            assert soon_queued == [False] * 2 + [True] * 4
            assert queued() == {runs[0]: iso(at), runs[1]: iso(at)}  # two batches ahead
            shown = await _shown(client, editor, jobs[2]["id"])
            assert shown["fired"] == 0 and shown["last_run"] is None
            await asyncio.to_thread(run_pass, settings, role)
        assert set(queued()) == set(runs)
        for job in [*jobs, soon]:
            shown = await _shown(client, editor, job["id"])
            assert (shown["fired"], shown["missed"]) == (1, 0), shown


async def _planned_then_ahead(
    settings: Settings, role: SchedulerRole, clock: Clock, at: datetime
) -> None:
    """A pass plans the jobs (due at `at`), then, a second before it, run_ahead."""
    clock.now = at - timedelta(seconds=30)
    await asyncio.to_thread(run_pass, settings, role)
    clock.now = at - timedelta(seconds=1)
    url = settings.database_url or ""
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        await asyncio.to_thread(role.run_ahead, conn, at)


async def test_a_role_stopped_while_waiting_ahead_queues_nothing(settings: Settings) -> None:
    """Stopped during the wait for the burst's time: nothing is queued before it, and the
    jobs' rows go back as they were, for a pass (of any scheduler) at the time."""
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "stopped")
        job = await _job(client, editor, pipeline["id"])
        at = _at(job, 1)
        clock = Clock()
        with scheduler(settings, clock, lead=2.0, sleep=lambda seconds: False) as role:
            await _planned_then_ahead(settings, role, clock, at)
            assert (await _shown(client, editor, job["id"]))["fired"] == 0
            clock.now = at + timedelta(seconds=0.1)
            await asyncio.to_thread(run_pass, settings, role)
        shown = await _shown(client, editor, job["id"])
        assert (shown["fired"], shown["last_run_id"]) == (1, str(fire_run_id(job["id"], at)))


async def test_a_pass_while_waiting_ahead_leaves_the_held_jobs_to_the_burst(
    settings: Settings,
) -> None:
    """A pass that starts just before the burst's time may query the due jobs just after
    it: those held for the burst (its own transaction's locks, which SKIP LOCKED does not
    pass over) are not fired by that pass too, which counted each such fire twice."""
    async with world(settings) as (client, editor, _):
        pipeline = await create_pipeline(client, editor, "held")
        job = await _job(client, editor, pipeline["id"])
        at = _at(job, 1)
        clock = Clock()
        script: list[datetime] = []

        def reading() -> datetime:
            return script.pop(0) if script else clock.now

        def sleep(seconds: float) -> bool:
            script.append(at - timedelta(milliseconds=1))  # the pass starts before `at`
            clock.now = at + timedelta(seconds=0.5)  # and reads the due jobs after it
            return True

        with scheduler(settings, clock, lead=2.0, sleep=sleep) as role:
            role._clock = reading  # type: ignore[method-assign]
            await _planned_then_ahead(settings, role, clock, at)
        shown = await _shown(client, editor, job["id"])
        assert (shown["fired"], shown["last_run_id"]) == (1, str(fire_run_id(job["id"], at)))
