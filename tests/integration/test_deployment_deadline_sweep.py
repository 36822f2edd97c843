"""The durable timer on real PostgreSQL and NATS: the executor role as api/bootstrap.py
wires it settles a blue-green verification whose run never ends (no relay runs, so its
run stays queued) once its deadline has passed; blue stays active. The deadline is in
the event store: a maintenance started after a clean stop, after the deadline passed
with nothing running at all, still settles it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from api.bootstrap import Container, build_container, executor_role
from domain.run import Run, RunStatus
from infrastructure.settings import Settings
from projections import DeploymentsProjection, RunsProjection
from tests.integration.deployment_support import (
    ALICE,
    CTX,
    Deployments,
    blue_green,
    project,
    table,
)
from tests.integration.run_helpers import poll


def sweeping(settings: Settings) -> Settings:
    # The maintenance pass comes every min(5 s, heartbeat_interval).
    return replace(settings, heartbeat_interval=0.3, heartbeat_timeout=1.5)


@contextlib.asynccontextmanager
async def container_of(settings: Settings) -> AsyncIterator[Container]:
    container = build_container(settings, settings.database_url or "", settings.nats_url or "")
    await container.read_pool.open()
    try:
        yield container
    finally:
        await container.read_pool.close()
        container.close()


@contextlib.asynccontextmanager
async def executor_running(container: Container) -> AsyncIterator[None]:
    """The executor role (workers and maintenance) until the block ends; stopped cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(executor_role(container).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def green_release(world: Deployments, timeout: int = 1) -> UUID:
    """A deployment whose release 1 (direct) is active and whose release 2 (blue-green,
    another revision) verifies with a run that nobody will execute."""
    deployment = world.create("production")
    world.revise("b.jsonl")
    world.service.release(ALICE, deployment, CTX, revision=2, strategy=blue_green(timeout))
    return deployment


async def release_ended(world: Deployments, deployment: UUID) -> None:
    async def ended() -> bool | None:
        return True if world.deployment(deployment).verifying_release is None else None

    await poll(ended, "the verifying release to end")


def assert_blue_stays(world: Deployments, deployment: UUID) -> None:
    settled = world.deployment(deployment)
    green = settled.releases[2]
    assert green.outcome == "failed" and "deadline" in (green.failure or "")
    assert (settled.status, settled.active_release) == ("active", 1)
    assert settled.releases[1].outcome == "active"
    # Failed although its run never started (nobody dispatched it), which is cancelled
    # with the release: its outcome can no longer count.
    run = world.store.load(Run, UUID(green.run_id or ""), "run")
    assert run.status == RunStatus.CANCELLED


async def test_the_maintenance_fails_a_verification_whose_run_never_ends(
    settings: Settings, database_url: str
) -> None:
    async with container_of(sweeping(settings)) as container:
        world = Deployments(container.store, container.usage)
        deployment = green_release(world)
        await project(database_url)  # the sweep's candidates come from the read models
        async with executor_running(container):
            await release_ended(world, deployment)
        assert_blue_stays(world, deployment)

        await project(database_url, (DeploymentsProjection(), RunsProjection()))
        [row] = await table(database_url, "deployments", "id")
        assert (row["status"], row["active_release"], row["verifying_release"]) == (
            "active",
            1,
            None,
        )


async def test_a_maintenance_started_after_the_deadline_still_settles_it(
    settings: Settings, database_url: str
) -> None:
    settings = sweeping(settings)
    async with container_of(settings) as container:
        async with executor_running(container):
            pass  # a maintenance that ran, and stopped cleanly before the release
        world = Deployments(container.store, container.usage)
        deployment = green_release(world)
        await project(database_url)
        deadline = world.deployment(deployment).releases[2].deadline
        assert deadline is not None

        async def passed() -> bool | None:
            return True if datetime.now(UTC) > deadline else None

        await poll(passed, "the deadline to pass")
        # Nothing ran meanwhile: the release still verifies, past its deadline.
        assert world.deployment(deployment).verifying_release == 2

        # Another process (a fresh container) takes maintenance and finds the deadline.
        async with container_of(settings) as restarted, executor_running(restarted):
            await release_ended(world, deployment)
        assert_blue_stays(world, deployment)
