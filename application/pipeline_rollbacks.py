"""A pipeline's rollback, and with `redeploy` the revision it makes released everywhere
the pipeline is deployed (POST /pipelines/{id}:rollback, README "Deployments").

The rollback is one append on the pipeline; each release after it is one append on its
deployment, with that deployment's own strategy and under its environment's rules, so one
deployment's refusal (a protected environment the caller may not release to, a release
still verifying) is reported for it and does not undo the others. Asked with an
Idempotency-Key, a retry after a crash finds the rollback and every release an earlier
attempt made (each release's ids derive from the key and the deployment) and finishes
the rest, so no deployment is released twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from uuid import UUID

from application.deployments import DeploymentService, Released
from application.errors import NotFound, PermissionDenied, VersionConflict
from application.event_store import NornEventStore
from application.pipelines import PipelineService, RolledBack
from application.principal import Principal
from domain.errors import DomainError
from domain.events import CommandContext, Idempotency
from domain.pipeline_deployments import PipelineDeployments, pipeline_deployments_id


@dataclass(frozen=True)
class Redeployment:
    """What became of one deployment: `released`, or `refused` with the error the same
    release asked on its own would have answered."""

    deployment_id: str
    environment: str
    released: Released | None = None
    refused: Exception | None = None


@dataclass(frozen=True, kw_only=True)
class RolledBackEverywhere(RolledBack):
    redeployments: list[Redeployment] = field(default_factory=list)


class PipelineRollbacks:
    def __init__(
        self, store: NornEventStore, pipelines: PipelineService, deployments: DeploymentService
    ) -> None:
        self._store = store
        self._pipelines = pipelines
        self._deployments = deployments

    def roll_back(
        self,
        principal: Principal,
        pipeline_id: UUID,
        revision: int,
        ctx: CommandContext,
        expected_version: int | None = None,
        *,
        redeploy: bool = False,
    ) -> RolledBackEverywhere:
        """The definition at `revision` restored as a new revision; with `redeploy`, that
        new revision released to every deployment of the pipeline not retired."""
        done = self._pipelines.roll_back(principal, pipeline_id, revision, ctx, expected_version)
        redeployments = self._redeploy(principal, done, ctx) if redeploy else []
        return RolledBackEverywhere(
            done.state,
            done.version,
            done.position,
            done.replayed,
            rolled_back_to=done.rolled_back_to,
            previous_revision=done.previous_revision,
            redeployments=redeployments,
        )

    def _redeploy(
        self, principal: Principal, done: RolledBack, ctx: CommandContext
    ) -> list[Redeployment]:
        live = self._store.find(PipelineDeployments, pipeline_deployments_id(str(done.state.id)))
        if live is None:
            return []
        return [
            self._release(principal, UUID(deployment_id), done, ctx)
            for deployment_id in list(live.deployment_ids)
        ]

    def _release(
        self,
        principal: Principal,
        deployment_id: UUID,
        done: RolledBack,
        ctx: CommandContext,
    ) -> Redeployment:
        """Every role that may roll a pipeline back may release it (tests say so); a
        protected environment is the release's to refuse."""
        try:
            deployment = self._deployments.load(principal, deployment_id)
        except NotFound as refused:
            return Redeployment(str(deployment_id), "", refused=refused)
        environment = deployment.environment
        try:
            released = self._deployments.release(
                principal,
                deployment_id,
                _for_deployment(ctx, deployment_id),
                revision=done.state.revision,
            )
        except (DomainError, NotFound, PermissionDenied, VersionConflict) as refused:
            return Redeployment(str(deployment_id), environment, refused=refused)
        return Redeployment(str(deployment_id), environment, released=released)


def _for_deployment(ctx: CommandContext, deployment_id: UUID) -> CommandContext:
    """The request's context for one deployment's release: with an Idempotency-Key, a key
    of its own derived from the request's, so that each release derives its own ids (a
    blue-green release's verification run) and a retry finds each release it made."""
    if ctx.idempotency is None:
        return ctx
    key = hashlib.sha256(f"{ctx.idempotency.key_id}:{deployment_id}".encode()).hexdigest()
    idempotency = Idempotency(
        key_id=key,
        earlier_attempt=ctx.idempotency.earlier_attempt,
        answered_earlier=ctx.idempotency.answered_earlier,
    )
    return replace(ctx, idempotency=idempotency, causation_id=idempotency.causation_id)
