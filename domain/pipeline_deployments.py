"""PipelineDeployments: how many deployments of one pipeline are not retired, kept by the
event store so that deleting the pipeline and deploying it cannot both succeed.

One aggregate per pipeline, its id derived from the pipeline's like a name claim's. A
deployment's create counts itself in it and its retire uncounts itself, each in its own
append; a pipeline's delete closes it in the delete's append (creating it closed if no
deployment was ever made), refused while any deployment is counted. Whichever of a
delete and a create appends second conflicts on this aggregate's version and decides
again on what the first one saved.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, HasDeployments
from domain.events import CommandContext, NornCreated, NornEvent


def pipeline_deployments_id(pipeline_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"norn:pipeline-deployments:{pipeline_id}")


class PipelineDeploymentsEvent(NornEvent):
    aggregate_type = "pipeline_deployments"


class PipelineDeploymentsOpened(PipelineDeploymentsEvent, NornCreated):
    pipeline_id: str
    closed: bool = False
    """Created closed by a delete of a pipeline that never had a deployment."""


class PipelineDeploymentsCounted(PipelineDeploymentsEvent):
    deployment_id: str
    live: int

    def apply(self, aggregate: PipelineDeployments) -> None:
        aggregate.live = self.live
        aggregate.deployment_ids.append(self.deployment_id)


class PipelineDeploymentsUncounted(PipelineDeploymentsEvent):
    deployment_id: str
    live: int

    def apply(self, aggregate: PipelineDeployments) -> None:
        aggregate.live = self.live
        if self.deployment_id in aggregate.deployment_ids:
            aggregate.deployment_ids.remove(self.deployment_id)


class PipelineDeploymentsClosed(PipelineDeploymentsEvent):
    def apply(self, aggregate: PipelineDeployments) -> None:
        aggregate.closed = True


class PipelineDeployments(Aggregate):
    def __init__(self, tenant_id: str, pipeline_id: str, closed: bool = False) -> None:
        self.tenant_id = tenant_id
        self.pipeline_id = pipeline_id
        self.live = 0
        self.deployment_ids: list[str] = []
        """The deployments not retired, oldest first (what a rollback redeploys to)."""
        self.closed = closed

    @classmethod
    def open(
        cls, *, tenant_id: str, pipeline_id: str, ctx: CommandContext, closed: bool = False
    ) -> PipelineDeployments:
        return cls._create(
            PipelineDeploymentsOpened,
            id=pipeline_deployments_id(pipeline_id),
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            closed=closed,
            **ctx.event_fields(),
        )

    def count(self, deployment_id: str, ctx: CommandContext) -> None:
        if self.closed:
            raise AggregateDeleted(f"pipeline {self.pipeline_id} was deleted")
        self._trigger(
            PipelineDeploymentsCounted, ctx, deployment_id=deployment_id, live=self.live + 1
        )

    def uncount(self, deployment_id: str, ctx: CommandContext) -> None:
        if self.live > 0:
            self._trigger(
                PipelineDeploymentsUncounted, ctx, deployment_id=deployment_id, live=self.live - 1
            )

    def close(self, ctx: CommandContext) -> None:
        if self.live > 0:
            raise HasDeployments(
                f"the pipeline has {self.live} deployment(s) not retired; retire them first"
            )
        if not self.closed:
            self._trigger(PipelineDeploymentsClosed, ctx)

    def _trigger(
        self, event_class: type[PipelineDeploymentsEvent], ctx: CommandContext, **fields: Any
    ) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
