"""The deployments read model on real PostgreSQL: events made by the real services give
the right rows, a replay or a rebuild changes nothing, the queries filter, paginate and
keep tenants apart, the sweep's candidates are the due ones, the usage counts live
deployments, and runs of a deployment are found by deployment and environment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from application.deployment_verification import DeploymentVerification
from application.event_store import NornEventStore
from application.principal import Principal
from application.tenants import TenantService
from infrastructure.envelope import CloudEvent
from infrastructure.postgres import create_read_pool, create_sync_pool
from projections import (
    DeploymentQueries,
    DeploymentsProjection,
    RunsProjection,
    VerifyingDeployments,
    rebuild,
)
from projections.run_queries import RunQueries
from projections.usage import ReadModelUsage
from tests.integration.deployment_support import (
    ALICE,
    BOB,
    CTX,
    T1,
    T2,
    Deployments,
    blue_green,
    project,
    table,
)


@pytest.fixture
def world(event_store: NornEventStore, usage: ReadModelUsage) -> Deployments:
    return Deployments(event_store, usage)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    read_pool = create_read_pool(database_url, max_size=4)
    await read_pool.open()
    yield read_pool
    await read_pool.close()


def later(world: Deployments, by: timedelta) -> DeploymentVerification:
    """The verification paths with a clock `by` ahead (a deadline passed, no waiting)."""
    return DeploymentVerification(world.store, clock=lambda: datetime.now(UTC) + by)


def history(world: Deployments) -> tuple[UUID, UUID]:
    """staging: direct r1 (rev 1), direct r2 (rev 2), blue-green r3 (rev 1) failed at its
    deadline, rollback r4 (rev 1, back to r1); production: blue-green r1 verifying, then
    retired."""
    staging = world.create("staging", labels={"tier": "gold"})
    world.revise("b.jsonl")
    world.service.release(ALICE, staging, CTX, revision=2)
    world.service.release(ALICE, staging, CTX, revision=1, strategy=blue_green())
    later(world, timedelta(minutes=5)).settle(staging, CTX)
    world.service.roll_back(ALICE, staging, CTX)
    production = world.create("production", strategy=blue_green())
    world.service.retire(ALICE, production, CTX)
    return staging, production


async def test_events_give_the_deployment_and_release_rows(
    database_url: str, world: Deployments, usage: ReadModelUsage
) -> None:
    staging, production = history(world)
    await project(database_url)

    rows = {r["id"]: r for r in await table(database_url, "deployments", "id")}
    row = rows[staging]
    assert (row["status"], row["active_release"], row["active_revision"]) == ("active", 4, 1)
    assert row["verifying_release"] is None and row["verifying_deadline"] is None
    assert row["release_count"] == 4 and row["labels"] == {"tier": "gold"}
    assert (row["tenant_id"], row["environment"], row["retired"]) == (T1, "staging", False)
    assert rows[production]["status"] == "retired" and rows[production]["retired"]

    releases = await table(database_url, "deployment_releases", "deployment_id, release")
    by_number = {r["release"]: r for r in releases if r["deployment_id"] == staging}
    assert [(n, r["revision"], r["outcome"]) for n, r in sorted(by_number.items())] == [
        (1, 1, "superseded"),
        (2, 2, "rolled_back"),
        (3, 1, "failed"),
        (4, 1, "active"),
    ]
    assert by_number[3]["strategy"]["type"] == "blue-green" and by_number[3]["run_id"]
    assert by_number[3]["deadline"] == by_number[3]["created_at"] + timedelta(seconds=60)
    assert "deadline" in by_number[3]["failure"]
    assert by_number[4]["rolled_back_to"] == 1 and by_number[4]["strategy"]["type"] == "direct"
    retired_release = [r for r in releases if r["deployment_id"] == production]
    assert [(r["outcome"], r["failure"]) for r in retired_release] == [
        ("failed", "the deployment was retired")
    ]
    # The write side agrees on what is active.
    assert world.deployment(staging).active_release == 4
    # max_deployments usage: the retired one gave its unit back.
    assert usage.count(T1, "deployments") == 1
    assert usage.count(T2, "deployments") == 0
    admin = Principal("u9", "root", T1, frozenset({"admin"}), tenant_status="active")
    _, quotas = TenantService(world.store, usage).usage(admin, UUID(T1))
    assert quotas["max_deployments"].used == 1


async def test_a_verifying_release_and_its_verification(
    database_url: str, world: Deployments
) -> None:
    first = world.create("production", strategy=blue_green(30))
    await project(database_url)
    [row] = await table(database_url, "deployments", "id")
    assert (row["status"], row["active_release"], row["verifying_release"]) == (
        "verifying",
        None,
        1,
    )
    assert row["verifying_deadline"] == row["verifying_since"] + timedelta(seconds=30)
    run_id = world.deployment(first).verifying().run_id  # type: ignore[union-attr]
    assert str(row["verifying_run_id"]) == run_id

    later(world, timedelta(minutes=1)).settle(first, CTX)  # the first release fails
    await project(database_url)
    [row] = await table(database_url, "deployments", "id")
    assert (row["status"], row["active_release"], row["verifying_release"]) == (
        "failed",
        None,
        None,
    )


async def test_replay_and_rebuild_change_nothing(database_url: str, world: Deployments) -> None:
    history(world)
    await project(database_url, in_batches_of=3)
    before = [
        await table(database_url, "deployments", "id"),
        await table(database_url, "deployment_releases", "deployment_id, release"),
        await table(database_url, "deployment_counts", "tenant_id"),
    ]
    await project(database_url)  # every event again: all at or below the tracked position
    await rebuild(DeploymentsProjection(), database_url)
    after = [
        await table(database_url, "deployments", "id"),
        await table(database_url, "deployment_releases", "deployment_id, release"),
        await table(database_url, "deployment_counts", "tenant_id"),
    ]
    assert after == before


async def test_queries_filter_paginate_and_keep_tenants_apart(
    database_url: str, world: Deployments, pool: AsyncConnectionPool
) -> None:
    staging, production = history(world)
    environments = [f"env-{i}" for i in range(5)]
    made = [world.create(env, labels={"tier": "bronze"}) for env in environments]
    theirs = world.create("staging", principal=BOB)
    await project(database_url)
    queries = DeploymentQueries(pool)

    assert (await queries.get(T1, staging))["active_revision"] == 1  # type: ignore[index]
    assert await queries.get(T2, staging) is None
    assert await queries.get(T1, theirs) is None
    assert (await queries.get(None, theirs))["tenant_id"] == T2  # type: ignore[index]

    async def ids(**filters: object) -> list[UUID]:
        items, _ = await queries.list(T1, **filters)  # type: ignore[arg-type]
        return [UUID(item["id"]) for item in items]

    assert await ids() == [staging, production, *made]
    assert await ids(environment="staging") == [staging]
    assert await ids(status="retired") == [production]
    assert await ids(status="active") == [staging, *made]
    assert await ids(labels={"tier": "bronze"}) == made
    assert await ids(pipeline_id=world.pipeline, labels={"tier": "gold"}) == [staging]
    assert await ids(pipeline_id=world.other_pipeline) == []
    assert [i["id"] for i in (await queries.list(T2)).items] == [str(theirs)]
    with pytest.raises(ValueError):
        await queries.list(T1, status="sleeping")

    walked: list[UUID] = []
    cursor = None
    while True:
        page = await queries.list(T1, limit=2, cursor=cursor, order="desc")
        walked += [UUID(item["id"]) for item in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == [*reversed(made), production, staging]
    numbered = await queries.list(T1, limit=3, page=2)
    assert [UUID(i["id"]) for i in numbered.items] == made[1:4] and numbered.total == 7

    releases = await queries.releases(T1, staging)
    assert [(r["release"], r["outcome"]) for r in releases or []] == [
        (1, "superseded"),
        (2, "rolled_back"),
        (3, "failed"),
        (4, "active"),
    ]
    newest = await queries.releases(T1, staging, newest_first=True)
    assert [r["release"] for r in newest or []] == [4, 3, 2, 1]
    assert await queries.releases(T2, staging) is None
    assert await queries.releases(T1, uuid4()) is None


async def test_the_sweeps_candidates_are_the_due_verifications(
    database_url: str, world: Deployments
) -> None:
    waiting = world.create("production", strategy=blue_green(600))
    cancelled = world.create("staging", strategy=blue_green(600))
    settled = world.create("qa", strategy=blue_green(600))
    direct = world.create("dev")
    run_id = world.deployment(cancelled).verifying().run_id  # type: ignore[union-attr]
    # Cancelled while queued, through the runs API: no executor tells the deployment.
    world.runs.cancel(ALICE, UUID(run_id), CTX)
    later(world, timedelta(hours=1)).settle(settled, CTX)
    await project(database_url)
    pool = create_sync_pool(database_url, max_size=1)
    try:
        candidates = VerifyingDeployments(pool)
        now = datetime.now(UTC)
        assert candidates.due(now, 10) == [cancelled]
        assert set(candidates.due(now + timedelta(hours=1), 10)) == {waiting, cancelled}
        assert len(candidates.due(now + timedelta(hours=1), 1)) == 1
        # The sweep settles what it is given, from the write side.
        verification = DeploymentVerification(world.store)
        assert verification.sweep_pass(candidates) == [cancelled]
    finally:
        pool.close()
    cancelled_release = world.deployment(cancelled).releases[1]
    assert cancelled_release.outcome == "failed" and "cancelled" in (
        cancelled_release.failure or ""
    )
    assert world.deployment(waiting).verifying_release == 1
    assert world.deployment(direct).active_release == 1


async def test_runs_of_a_deployment_by_deployment_and_environment(
    database_url: str, world: Deployments, pool: AsyncConnectionPool
) -> None:
    staging = world.create("staging")
    production = world.create("production", strategy=blue_green())
    executed = world.service.execute(ALICE, staging, CTX, params={"day": 1}).state.id
    plain = world.runs.trigger(ALICE, world.pipeline, params={}, ctx=CTX).state.id
    theirs = world.create("staging", principal=BOB)
    their_run = world.service.execute(BOB, theirs, CTX).state.id
    await project(database_url, (RunsProjection(),))
    runs = RunQueries(pool)

    async def ids(tenant: str, **filters: object) -> set[str]:
        items, _ = await runs.list(tenant, **filters)  # type: ignore[arg-type]
        return {item["id"] for item in items}

    verification = world.deployment(production).verifying().run_id  # type: ignore[union-attr]
    assert await ids(T1, deployment_id=staging) == {str(executed)}
    assert await ids(T1, deployment_id=production) == {verification}
    assert await ids(T1, environment="production") == {verification}
    assert await ids(T1, environment="staging") == {str(executed)}
    assert await ids(T1, deployment_id=theirs) == set()
    assert await ids(T2, environment="staging") == {str(their_run)}
    assert str(plain) in await ids(T1) and str(plain) not in await ids(T1, environment="staging")
    row = await runs.get(T1, executed)
    assert row is not None
    assert (row["deployment_id"], row["environment"], row["release"]) == (
        str(staging),
        "staging",
        1,
    )
    assert row["params"] == {"day": 1}
    plain_row = await runs.get(T1, plain)
    assert plain_row is not None
    assert (plain_row["deployment_id"], plain_row["environment"], plain_row["release"]) == (
        None,
        None,
        None,
    )
    with pytest.raises(ValueError):
        await runs.list(T1, environment="bad\x00name")


def without_deployment_fields(event: CloudEvent) -> CloudEvent:
    """A run queued before triggers named an environment and a release."""
    if event.type != "norn.run.queued.v1":
        return event
    trigger = {k: v for k, v in event.data["trigger"].items() if k in ("kind", "id")}
    return msgspec.structs.replace(event, data={**event.data, "trigger": trigger})


async def test_runs_queued_before_triggers_had_environments_still_project(
    database_url: str, world: Deployments, pool: AsyncConnectionPool
) -> None:
    plain = world.runs.trigger(ALICE, world.pipeline, params={}, ctx=CTX).state.id
    staging = world.create("staging")
    executed = world.service.execute(ALICE, staging, CTX).state.id
    await project(database_url, (RunsProjection(),), as_stored_before=without_deployment_fields)
    runs = RunQueries(pool)
    for run_id in (plain, executed):
        row = await runs.get(T1, run_id)
        assert row is not None and (row["environment"], row["release"]) == (None, None)
    # The deployment's id is the trigger's own, which older events carried too.
    assert [i["id"] for i in (await runs.list(T1, deployment_id=staging)).items] == [str(executed)]
