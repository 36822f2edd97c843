"""What the deployments read-model and sweep tests share: two tenants with a pipeline
each, the real services on the real store, and the read models brought up to date by
applying the store's events directly (the same batches a runner applies)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from application.deployments import DeploymentService
from application.event_store import NornEventStore
from application.pipelines import PipelineService
from application.principal import Principal
from application.runs import RunService
from domain.deployment import Deployment
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition, StepSpec
from domain.release import Strategy
from infrastructure.envelope import CloudEvent, to_cloud_event
from infrastructure.notification_log import max_position, read_notifications
from infrastructure.plugins.catalog import PluginCatalog
from projections import DeploymentsProjection, RunsProjection, apply_batch
from projections.projection import Projection
from projections.usage import ReadModelUsage
from tests.conftest import seed_tenant

T1 = "00000000-0000-4000-8000-0000000000d1"
T2 = "00000000-0000-4000-8000-0000000000d2"
ALICE = Principal("u1", "alice", T1, frozenset({"editor"}), tenant_status="active")
BOB = Principal("u2", "bob", T2, frozenset({"editor"}), tenant_status="active")
CTX = CommandContext("user:u1", "corr-1")
WAIT = 20.0  # generous bound for convergence; tests never assert on timing


def blue_green(timeout: int = 60) -> Strategy:
    return Strategy(type="blue-green", verification_timeout=timeout)


def definition(name: str, path: str = "in.jsonl") -> PipelineDefinition:
    return PipelineDefinition(name=name, steps=(StepSpec("read", "Input.file", {"path": path}),))


class Deployments:
    """The write side of tenants T1 and T2, each with a pipeline."""

    def __init__(self, store: NornEventStore, usage: ReadModelUsage) -> None:
        seed_tenant(store, UUID(T1), "t1")
        seed_tenant(store, UUID(T2), "t2")
        self.store = store
        self.pipelines = PipelineService(store, PluginCatalog(), usage)
        self.runs = RunService(store, self.pipelines, usage)
        self.service = DeploymentService(store, self.pipelines, self.runs)
        self.pipeline = self.pipelines.create(ALICE, definition("orders"), CTX).state.id
        self.other_pipeline = self.pipelines.create(BOB, definition("orders"), CTX).state.id

    def revise(self, path: str) -> None:
        self.pipelines.revise(ALICE, self.pipeline, definition("orders", path), CTX)

    def create(self, environment: str, principal: Principal = ALICE, **fields: Any) -> UUID:
        pipeline = self.pipeline if principal is ALICE else self.other_pipeline
        made = self.service.create(principal, pipeline, environment, CTX, **fields)
        return made.state.id

    def deployment(self, deployment_id: UUID) -> Deployment:
        return self.store.load(Deployment, deployment_id, "deployment")


async def project(
    database_url: str,
    projections: tuple[Projection, ...] = (),
    *,
    in_batches_of: int = 1000,
    as_stored_before: Callable[[CloudEvent], CloudEvent] = lambda event: event,
) -> None:
    """Apply every committed event to the read models, as their runners would;
    `as_stored_before` rewrites each event as an older version of Norn stored it."""
    projections = projections or (DeploymentsProjection(), RunsProjection())
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        committed = await max_position(conn)
        position = 0
        deadline = time.monotonic() + WAIT
        while position < committed:
            assert time.monotonic() < deadline, f"events up to {committed} never passed"
            notifications = await read_notifications(conn, position, in_batches_of, precise=True)
            events = [as_stored_before(to_cloud_event(n)) for n in notifications]
            for projection in projections:
                await apply_batch(conn, projection, events)
            if events:
                position = events[-1].position


async def table(database_url: str, name: str, order: str) -> list[dict[str, Any]]:
    async with (
        await AsyncConnection.connect(database_url, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(f"SELECT * FROM {name} ORDER BY {order}")
        return await cur.fetchall()
