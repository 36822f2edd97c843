"""The jobs read model on real PostgreSQL: Job aggregates appended to the real event store
give the right rows, what the scheduler did (its own table) is merged into them and
outlives a rebuild, a replay or a rebuild
changes nothing, the queries filter, paginate and keep tenants apart, and the max_jobs
usage counts the jobs not deleted, exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from application.event_store import NornEventStore
from application.principal import Principal
from application.tenants import TenantService
from domain.job import Job, JobSpec, JobTarget
from infrastructure.postgres import create_read_pool
from projections import JobQueries, JobsProjection, rebuild
from projections.usage import ReadModelUsage
from tests.conftest import seed_tenant
from tests.integration.deployment_support import CTX, T1, T2, project, table

DEPLOYMENT = "00000000-0000-4000-8000-0000000000e1"
PIPELINE = "00000000-0000-4000-8000-0000000000f1"
OTHER_PIPELINE = "00000000-0000-4000-8000-0000000000f2"
COUNTERS = ("fired", "skipped", "missed", "refused", "late")


def spec(
    name: str,
    *,
    deployment: str | None = None,
    pipeline: str | None = None,
    revision: int | None = None,
    **fields: Any,
) -> JobSpec:
    """A definition; its target is PIPELINE unless another is named."""
    if deployment is None and pipeline is None:
        pipeline = PIPELINE
    target = JobTarget(deployment_id=deployment, pipeline_id=pipeline, revision=revision)
    cron_expr = fields.pop("cron_expr", "0 * * * *")
    return JobSpec(name=name, target=target, cron_expr=cron_expr, **fields)


class Jobs:
    """Jobs of tenants T1 and T2, made and changed by the aggregate's own commands."""

    def __init__(self, store: NornEventStore) -> None:
        seed_tenant(store, UUID(T1), "t1")
        seed_tenant(store, UUID(T2), "t2")
        self.store = store

    def create(self, name: str, *, tenant: str = T1, enabled: bool = True, **fields: Any) -> UUID:
        job = Job.create(
            job_id=uuid4(), tenant_id=tenant, spec=spec(name, **fields), enabled=enabled, ctx=CTX
        )
        self.store.append(job)
        return job.id

    def change(self, job_id: UUID, decide: Callable[[Job], object]) -> None:
        job = self.store.load(Job, job_id, "job")
        decide(job)
        self.store.append(job)


@pytest.fixture
def jobs(event_store: NornEventStore) -> Jobs:
    return Jobs(event_store)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    read_pool = create_read_pool(database_url, max_size=4)
    await read_pool.open()
    yield read_pool
    await read_pool.close()


async def project_jobs(database_url: str, in_batches_of: int = 1000) -> None:
    await project(database_url, (JobsProjection(),), in_batches_of=in_batches_of)


async def rows(database_url: str) -> dict[UUID, dict[str, Any]]:
    return {row["id"]: row for row in await table(database_url, "jobs", "id")}


async def test_events_give_the_job_rows(database_url: str, jobs: Jobs) -> None:
    oslo = timezone(timedelta(hours=2))
    nightly = jobs.create(
        "nightly",
        deployment=DEPLOYMENT,
        cron_expr="0 2 * * *",
        timezone="Europe/Oslo",
        params={"day": "yesterday", "n": [1, 2]},
        misfire_policy="run_all",
        max_catchup=5,
        overlap_policy="queue_one",
        jitter_seconds=30,
        start_at=datetime(2027, 1, 1, 2, 0, tzinfo=oslo),
        end_at=datetime(2027, 6, 1, tzinfo=UTC),
        description="the nightly load",
        labels={"team": "data"},
    )
    hourly = jobs.create("hourly", enabled=False)
    await project_jobs(database_url)
    row = (await rows(database_url))[nightly]
    assert (row["tenant_id"], row["name"], row["created_by"]) == (T1, "nightly", "user:u1")
    assert (row["target_deployment_id"], row["target_pipeline_id"], row["target_revision"]) == (
        DEPLOYMENT,
        None,
        None,
    )
    assert (row["cron_expr"], row["timezone"], row["params"]) == (
        "0 2 * * *",
        "Europe/Oslo",
        {"day": "yesterday", "n": [1, 2]},
    )
    assert (row["misfire_policy"], row["max_catchup"]) == ("run_all", 5)
    assert (row["overlap_policy"], row["jitter_seconds"]) == ("queue_one", 30)
    assert row["start_at"] == datetime(2027, 1, 1, 0, 0, tzinfo=UTC)  # the same instant
    assert row["end_at"] == datetime(2027, 6, 1, tzinfo=UTC)
    assert (row["description"], row["labels"]) == ("the nightly load", {"team": "data"})
    assert (row["enabled"], row["disabled_reason"], row["deleted"]) == (True, None, False)
    assert (row["version"], row["created_at"]) == (1, row["updated_at"])
    assert (await rows(database_url))[hourly]["enabled"] is False

    # An update replaces the whole definition: fields it leaves out go back to defaults.
    jobs.change(
        nightly,
        lambda job: job.update(spec("nightly-v2", pipeline=PIPELINE, revision=3), CTX),
    )
    jobs.change(nightly, lambda job: job.disable(CTX, reason="its deployment was retired"))
    await project_jobs(database_url)
    row = (await rows(database_url))[nightly]
    assert (row["name"], row["target_deployment_id"], row["target_pipeline_id"]) == (
        "nightly-v2",
        None,
        PIPELINE,
    )
    assert (row["target_revision"], row["cron_expr"], row["timezone"]) == (3, "0 * * * *", "UTC")
    assert (row["params"], row["labels"], row["description"]) == ({}, {}, "")
    assert (row["misfire_policy"], row["overlap_policy"], row["start_at"]) == ("skip", "skip", None)
    assert (row["enabled"], row["disabled_reason"]) == (False, "its deployment was retired")
    assert row["version"] == 3 and row["updated_at"] > row["created_at"]

    jobs.change(nightly, lambda job: job.enable(CTX))
    await project_jobs(database_url)
    row = (await rows(database_url))[nightly]
    assert (row["enabled"], row["disabled_reason"], row["version"]) == (True, None, 4)
    jobs.change(nightly, lambda job: job.disable(CTX))  # by a user: no reason
    jobs.change(hourly, lambda job: job.delete(CTX))
    await project_jobs(database_url)
    found = await rows(database_url)
    assert (found[nightly]["enabled"], found[nightly]["disabled_reason"]) == (False, None)
    # A deleted job's row stays, marked (and `enabled` as it was).
    assert (found[hourly]["deleted"], found[hourly]["enabled"], found[hourly]["version"]) == (
        True,
        False,
        2,
    )
    # The write side agrees.
    assert jobs.store.load(Job, nightly, "job").spec.name == "nightly-v2"


async def test_what_the_scheduler_did_is_merged_in_and_outlives_a_rebuild(
    database_url: str, jobs: Jobs, pool: AsyncConnectionPool
) -> None:
    job = jobs.create("every-minute", cron_expr="* * * * *")
    unseen = jobs.create("unseen")
    await project_jobs(database_url)
    run_id, fired_at = uuid4(), datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO job_schedules (job_id, tenant_id, spec_version, cursor, last_run,"
            " last_run_id, fired, skipped, missed, refused, late)"
            " VALUES (%s, %s, 1, %s, %s, %s, 7, 1, 2, 3, 4)",
            (job, T1, fired_at, fired_at, run_id),
        )
    jobs.change(job, lambda j: j.update(spec("every-minute", cron_expr="*/5 * * * *"), CTX))
    await project_jobs(database_url)
    await rebuild(JobsProjection(), database_url)  # the jobs rows anew; job_schedules stays
    queries = JobQueries(pool)
    row = await queries.get(T1, job)
    assert row is not None and (row["cron_expr"], row["version"]) == ("*/5 * * * *", 2)
    assert (row["last_run"], row["last_run_id"], row["last_status"]) == (
        fired_at,
        str(run_id),
        None,  # no such run in the runs read model
    )
    assert [row[c] for c in COUNTERS] == [7, 1, 2, 3, 4]
    items, _ = await queries.list(T1)
    listed = {item["id"]: item for item in items}
    assert [listed[str(job)][c] for c in COUNTERS] == [7, 1, 2, 3, 4]
    assert [listed[str(unseen)][c] for c in COUNTERS] == [0, 0, 0, 0, 0]
    assert listed[str(unseen)]["last_run"] is None


async def test_replay_and_rebuild_change_nothing(database_url: str, jobs: Jobs) -> None:
    kept = jobs.create("kept", deployment=DEPLOYMENT, labels={"team": "data"})
    gone = jobs.create("gone")
    jobs.create("theirs", tenant=T2)
    jobs.change(kept, lambda job: job.update(spec("kept", cron_expr="5 4 * * *"), CTX))
    jobs.change(kept, lambda job: job.disable(CTX, reason="its pipeline was deleted"))
    jobs.change(gone, lambda job: job.delete(CTX))
    await project_jobs(database_url, in_batches_of=2)
    before = [
        await table(database_url, "jobs", "id"),
        await table(database_url, "job_counts", "tenant_id"),
    ]
    await project_jobs(database_url)  # every event again: all at or below the position
    await rebuild(JobsProjection(), database_url)  # every event again, into new tables
    after = [
        await table(database_url, "jobs", "id"),
        await table(database_url, "job_counts", "tenant_id"),
    ]
    assert after == before
    assert {r["tenant_id"]: r["live"] for r in after[1]} == {T1: 1, T2: 1}


async def test_queries_filter_paginate_and_keep_tenants_apart(
    database_url: str, jobs: Jobs, pool: AsyncConnectionPool
) -> None:
    gold = jobs.create("gold", deployment=DEPLOYMENT, labels={"team": "data", "tier": "gold"})
    off = jobs.create("off", pipeline=PIPELINE, labels={"team": "data"}, enabled=False)
    # Another spelling of the same id: kept, and found, in the canonical one.
    other = jobs.create("other", pipeline=OTHER_PIPELINE.upper(), labels={"team": "web"})
    gone = jobs.create("gone", deployment=DEPLOYMENT)
    made = [jobs.create(f"job-{i}") for i in range(4)]
    theirs = jobs.create("gold", tenant=T2, deployment=DEPLOYMENT)
    jobs.change(gone, lambda job: job.delete(CTX))
    await project_jobs(database_url)
    queries = JobQueries(pool)

    found = await queries.get(T1, gold)
    assert found is not None and (found["id"], found["name"]) == (str(gold), "gold")
    assert await queries.get(T2, gold) is None
    assert await queries.get(T1, theirs) is None
    assert await queries.get(T1, uuid4()) is None
    admin_view = await queries.get(None, theirs)
    assert admin_view is not None and admin_view["tenant_id"] == T2
    deleted = await queries.get(T1, gone)  # there, marked: the caller decides on a 404
    assert deleted is not None and deleted["deleted"] is True

    async def ids(tenant: str | None = T1, **filters: Any) -> list[UUID]:
        items, _ = await queries.list(tenant, **filters)
        return [UUID(item["id"]) for item in items]

    newest_first = [*reversed(made), other, off, gold]
    assert await ids() == newest_first  # the deleted one is left out
    assert await ids(enabled=True) == [*reversed(made), other, gold]
    assert await ids(enabled=False) == [off]
    assert await ids(deployment_id=DEPLOYMENT) == [gold]
    assert await ids(deployment_id=DEPLOYMENT.upper()) == [gold]
    assert await ids(pipeline_id=PIPELINE) == [*reversed(made), off]
    assert await ids(pipeline_id=OTHER_PIPELINE) == [other]
    assert await ids(deployment_id="not-an-id") == []
    assert await ids(labels={"team": "data"}) == [off, gold]
    assert await ids(labels={"team": "data", "tier": "gold"}) == [gold]
    assert await ids(labels={"team": "data"}, enabled=True) == [gold]
    assert await ids(deployment_id=DEPLOYMENT, pipeline_id=PIPELINE) == []
    assert await ids(T2) == [theirs]
    everyone = await ids(None)
    assert theirs in everyone and gold in everyone and gone not in everyone
    assert await ids(order="asc") == list(reversed(newest_first))
    for bad in (
        {"labels": {"team": "da\x00ta"}},
        {"deployment_id": "a\x00b"},
        {"pipeline_id": "a\x00b"},
        {"order": "sideways"},
        {"limit": 0},
        {"cursor": "%%%"},
        {"page": 0},
    ):
        with pytest.raises(ValueError):
            await queries.list(T1, **bad)

    walked: list[UUID] = []
    cursor = None
    while True:
        page = await queries.list(T1, limit=2, cursor=cursor)
        walked += [UUID(item["id"]) for item in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == newest_first
    first = await queries.list(T1, limit=2)
    with pytest.raises(ValueError, match="issued for"):
        await queries.list(T1, limit=2, cursor=first.next_cursor, order="asc")
    numbered = await queries.list(T1, limit=3, page=2)
    assert [UUID(i["id"]) for i in numbered.items] == newest_first[3:6]
    assert (numbered.total, numbered.has_more) == (7, True)


async def test_max_jobs_usage_counts_jobs_not_deleted(
    database_url: str, jobs: Jobs, usage: ReadModelUsage
) -> None:
    first = jobs.create("first")
    jobs.create("second", enabled=False)  # a disabled job still counts
    gone = jobs.create("gone")
    jobs.create("theirs", tenant=T2)
    jobs.change(gone, lambda job: job.delete(CTX))
    # Exact before the read model has seen anything: the unprojected events are counted.
    assert (usage.count(T1, "jobs"), usage.count(T2, "jobs")) == (2, 1)
    await project_jobs(database_url)
    assert (usage.count(T1, "jobs"), usage.count(T2, "jobs")) == (2, 1)
    counts = {r["tenant_id"]: r["live"] for r in await table(database_url, "job_counts", "1")}
    assert counts == {T1: 2, T2: 1}

    # Projected and unprojected together.
    jobs.change(first, lambda job: job.delete(CTX))
    jobs.create("third")
    jobs.create("fourth")
    assert usage.count(T1, "jobs") == 3
    # GET /tenants/{id}/usage: max_jobs shows a count now, as max_deployments does.
    admin = Principal("u9", "root", T1, frozenset({"admin"}), tenant_status="active")
    _, quotas = TenantService(jobs.store, usage).usage(admin, UUID(T1))
    assert quotas["max_jobs"].used == 3
