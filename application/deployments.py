"""Deployment use cases: create, release, execute, roll back, retire
(application/deployment_verification.py records how verifications end).

Each loads, lets the Deployment decide, and saves once, with what the decision touched in
the same append: the claim on the (pipeline, environment) pair, the pipeline's count of
live deployments (domain/pipeline_deployments.py), the tenant's deployments usage, and a
blue-green release's verification run with its take of the day's runs. Checks run in the
order role (a protected environment needs an admin), environment policy, quota.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec

from application.authorization import check_environment_role, sees
from application.commands import Aggregates
from application.conflicts import retry_on_conflict
from application.errors import VersionConflict
from application.event_store import NornEventStore
from application.idempotency import earlier_result, first_result, new_id
from application.name_claims import take_name
from application.pipelines import PipelineService
from application.principal import Principal
from application.results import Changed
from application.runs import RunService
from application.tenants import writable_tenant
from domain.deployment import Deployment
from domain.event_trigger import EventTrigger
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import Pipeline
from domain.pipeline_deployments import PipelineDeployments, pipeline_deployments_id
from domain.release import (
    DIRECT,
    Release,
    Strategy,
    check_environment,
    check_policy,
    check_strategy,
)
from domain.run import Run, Trigger
from domain.tenant import Tenant


@dataclass(frozen=True, kw_only=True)
class Released(Changed[Deployment]):
    """A create or a release also answers the release it made."""

    release: Release


@dataclass(frozen=True, kw_only=True)
class RolledBackTo(Changed[Deployment]):
    release: int
    rolled_back_to: int
    previous_release: int


def claim_scope(tenant_id: str, pipeline_id: str) -> str:
    """One deployment per (pipeline, environment): the environment is the claimed name."""
    return f"deployment:{tenant_id}:{pipeline_id}"


class DeploymentService:
    def __init__(self, store: NornEventStore, pipelines: PipelineService, runs: RunService):
        self._store = store
        self._pipelines = pipelines
        self._runs = runs
        self._ledger = pipelines.ledger
        self._deployments = Aggregates(
            store, Deployment, "deployment", scope=lambda p, d: sees(p, d.tenant_id)
        )

    def load(self, principal: Principal, deployment_id: UUID) -> Deployment:
        """Retired ones too: their history stays readable."""
        return self._deployments.load(principal, deployment_id)

    def create(
        self,
        principal: Principal,
        pipeline_id: UUID,
        environment: str,
        ctx: CommandContext,
        *,
        revision: int | None = None,
        strategy: Strategy = DIRECT,
        variables: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        description: str = "",
        triggers: tuple[EventTrigger, ...] = (),
    ) -> Released:
        """A deployment of the pipeline to the environment, with its first release (the
        pipeline's current revision unless `revision`), which verifies if blue-green."""
        deployment_id = new_id(ctx, "deployment")
        earlier = earlier_result(self._store, Deployment, deployment_id, ctx)
        if earlier is not None:
            return _released(earlier)
        tenant = writable_tenant(self._store, principal)
        check_environment(environment)
        check_strategy(strategy)
        self._check_rules(principal, tenant, environment, strategy)
        pipeline = self._pipelines.load(principal, pipeline_id)
        number = _revision(pipeline, revision)
        trigger = Trigger("deployment", str(deployment_id), environment, 1)
        queue_run = self._verification_run(
            pipeline, number, strategy, trigger, variables or {}, ctx
        )
        scope = claim_scope(tenant.tenant_id, str(pipeline.id))
        fresh_claim = True

        def attempt() -> Released:
            nonlocal fresh_claim
            deployment = Deployment.create(
                deployment_id=deployment_id,
                tenant_id=tenant.tenant_id,
                pipeline_id=str(pipeline.id),
                environment=environment,
                strategy=strategy,
                variables=variables,
                labels=labels,
                description=description,
                triggers=triggers,
                ctx=ctx,
            )
            run = queue_run() if queue_run else None
            deployment.release(number, ctx, run_id=run and str(run.id))
            holder = str(deployment_id)
            claim = take_name(
                self._store,
                scope,
                environment,
                holder,
                ctx,
                tenant_id=tenant.tenant_id,
                fresh=fresh_claim,
            )
            live = self._store.find(
                PipelineDeployments, pipeline_deployments_id(str(pipeline.id))
            ) or PipelineDeployments.open(
                tenant_id=tenant.tenant_id, pipeline_id=str(pipeline.id), ctx=ctx
            )
            live.count(holder, ctx)
            try:
                with ExitStack() as held:
                    usage = held.enter_context(self._ledger.take(tenant, "max_deployments", ctx))
                    day = run and held.enter_context(self._runs.take_run_of_day(tenant, ctx))
                    return _released(
                        self._deployments.save(deployment, claim, live, usage, run, day)
                    )
            except VersionConflict:
                first = first_result(self._store, Deployment, deployment_id, ctx)
                if first is not None:
                    return _released(first)
                fresh_claim = False  # the environment was claimed before: read the claim
                raise

        return retry_on_conflict(attempt)

    def deploy(
        self,
        principal: Principal,
        pipeline_id: UUID,
        environment: str,
        ctx: CommandContext,
        *,
        strategy: Strategy | None = None,
    ) -> Released:
        """The pipeline's current revision to `environment` (POST /pipelines/{id}:deploy):
        a release of the deployment that holds the environment (with `strategy`, else
        its own), or a new deployment there. The claim says which; a create racing this
        one loses on the claim (409) and may be retried."""
        pipeline = self._pipelines.load(principal, pipeline_id)
        check_environment(environment)
        scope = claim_scope(pipeline.tenant_id, str(pipeline.id))
        claim = self._store.find(NameClaim, claim_id(scope, environment))
        if claim is None or claim.holder_id is None:
            chosen = strategy or DIRECT
            return self.create(principal, pipeline_id, environment, ctx, strategy=chosen)
        return self.release(principal, UUID(claim.holder_id), ctx, strategy=strategy)

    def release(
        self,
        principal: Principal,
        deployment_id: UUID,
        ctx: CommandContext,
        *,
        revision: int | None = None,
        strategy: Strategy | None = None,
        expected_version: int | None = None,
    ) -> Released:
        """Release `revision` (the pipeline's current one by default) with `strategy`
        (the deployment's by default): active at once, or verifying (blue-green)."""
        earlier = self._deployments.earlier(principal, deployment_id, ctx)
        if earlier is not None:
            return _released(earlier)
        tenant = writable_tenant(self._store, principal)

        def attempt() -> Released:
            deployment = self._deployments.load(
                principal, deployment_id, expected_version=expected_version
            )
            chosen = strategy or deployment.strategy
            check_strategy(chosen)
            self._check_rules(principal, tenant, deployment.environment, chosen)
            pipeline = self._pipelines.load(principal, UUID(deployment.pipeline_id))
            number = _revision(pipeline, revision)
            trigger = Trigger(
                "deployment", str(deployment.id), deployment.environment, deployment.next_release
            )
            queue_run = self._verification_run(
                pipeline, number, chosen, trigger, deployment.variables, ctx
            )
            run = queue_run() if queue_run else None
            deployment.release(number, ctx, strategy=chosen, run_id=run and str(run.id))
            with ExitStack() as held:
                day = run and held.enter_context(self._runs.take_run_of_day(tenant, ctx))
                done = self._deployments.save(
                    deployment, run, day, precondition=expected_version is not None
                )
            return _released(done)

        return retry_on_conflict(attempt)

    def execute(
        self,
        principal: Principal,
        deployment_id: UUID,
        ctx: CommandContext,
        params: dict[str, Any] | None = None,
        *,
        via: Trigger | None = None,
    ) -> Changed[Run]:
        """A run of the active release's revision, its params the deployment's variables
        overridden key by key by `params`. Changes only the run (and the day's usage).
        `via`: what asked for it when not the caller itself (a job, as its trigger)."""
        deployment = self._deployments.load(principal, deployment_id)
        active = deployment.active()
        trigger = Trigger("deployment", str(deployment.id), deployment.environment, active.release)
        if via is not None:
            trigger = msgspec.structs.replace(
                via,
                environment=deployment.environment,
                release=active.release,
                deployment_id=str(deployment.id),
            )
        return self._runs.trigger(
            principal,
            UUID(deployment.pipeline_id),
            params=deployment.run_params(params or {}),
            ctx=ctx,
            revision=active.revision,
            trigger=trigger,
        )

    def roll_back(
        self,
        principal: Principal,
        deployment_id: UUID,
        ctx: CommandContext,
        *,
        to_release: int | None = None,
        expected_version: int | None = None,
    ) -> RolledBackTo:
        """The previous active release (or `to_release`) active again, as a new release.
        A rollback restores what was active before, so require_verification does not
        refuse it; a protected environment still needs an admin."""
        tenant = writable_tenant(self._store, principal)

        def decide(deployment: Deployment) -> None:
            policy = tenant.environment_policy(deployment.environment)
            check_environment_role(principal, deployment.environment, policy)
            deployment.roll_back(ctx, to_release)

        done = self._deployments.change(principal, deployment_id, decide, expected_version, ctx)
        made = done.state.releases[len(done.state.releases)]
        assert made.rolled_back_to is not None and made.replaced is not None
        return RolledBackTo(
            done.state,
            done.version,
            done.position,
            done.replayed,
            release=made.release,
            rolled_back_to=made.rolled_back_to,
            previous_release=made.replaced,
        )

    def set_triggers(
        self,
        principal: Principal,
        deployment_id: UUID,
        triggers: tuple[EventTrigger, ...],
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Deployment]:
        """Replace the events that start a run of the active release (README "Event
        triggers"); the environment's role rule applies as to a release."""
        tenant = writable_tenant(self._store, principal)

        def attempt() -> Changed[Deployment]:
            deployment = self._deployments.load(
                principal, deployment_id, expected_version=expected_version
            )
            policy = tenant.environment_policy(deployment.environment)
            check_environment_role(principal, deployment.environment, policy)
            deployment.set_triggers(triggers, ctx)
            return self._deployments.save(deployment)

        return retry_on_conflict(attempt)

    def retire(
        self,
        principal: Principal,
        deployment_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Deployment]:
        """Soft: history stays, every command is refused. Frees the (pipeline,
        environment) pair and the quota unit, fails a release still verifying and asks
        its verification run to stop, all in one append."""
        earlier = self._deployments.earlier(principal, deployment_id, ctx)
        if earlier is not None:
            return earlier
        tenant = writable_tenant(self._store, principal)

        def attempt() -> Changed[Deployment]:
            deployment = self._deployments.load(
                principal, deployment_id, expected_version=expected_version
            )
            policy = tenant.environment_policy(deployment.environment)
            check_environment_role(principal, deployment.environment, policy)
            abandoned = deployment.retire(ctx)
            run = self._stop_run(abandoned, principal, ctx)
            holder = str(deployment.id)
            scope = claim_scope(deployment.tenant_id, deployment.pipeline_id)
            claim = self._store.find(NameClaim, claim_id(scope, deployment.environment))
            if claim is not None:
                claim.release(holder, ctx)
            live = self._store.find(
                PipelineDeployments, pipeline_deployments_id(deployment.pipeline_id)
            )
            if live is not None:
                live.uncount(holder, ctx)
            with self._ledger.release(deployment.tenant_id, "max_deployments", ctx) as usage:
                return self._deployments.save(
                    deployment, claim, live, run, usage, precondition=expected_version is not None
                )

        return retry_on_conflict(attempt)

    def history(self, principal: Principal, deployment_id: UUID) -> Sequence[Any]:
        """Every event of the deployment, oldest first; readable after a retire."""
        self.load(principal, deployment_id)
        return self._store.stream(deployment_id)

    # --- helpers ------------------------------------------------------------------------

    def _check_rules(
        self, principal: Principal, tenant: Tenant, environment: str, strategy: Strategy
    ) -> None:
        """Role, then the environment's policy (the quota is taken at the save)."""
        policy = tenant.environment_policy(environment)
        check_environment_role(principal, environment, policy)
        check_policy(environment, strategy, policy)

    def _verification_run(
        self,
        pipeline: Pipeline,
        revision: int,
        strategy: Strategy,
        trigger: Trigger,
        variables: dict[str, Any],
        ctx: CommandContext,
    ) -> Callable[[], Run] | None:
        """How to queue the verification run of a blue-green release (None: direct): its
        params are the deployment's variables overridden by the verification_params."""
        if not strategy.verifies:
            return None
        return self._runs.new_run(
            pipeline,
            revision,
            run_id=new_id(ctx, "run"),
            params={**variables, **strategy.verification_params},
            trigger=trigger,
            ctx=ctx,
        )

    def _stop_run(
        self, abandoned: Release | None, principal: Principal, ctx: CommandContext
    ) -> Run | None:
        if abandoned is None or abandoned.run_id is None:
            return None
        run = self._store.find(Run, UUID(abandoned.run_id))
        if run is None or run.finished:
            return None
        run.request_cancel(f"deployment retired by {principal.actor}", ctx)
        return run


def _revision(pipeline: Pipeline, revision: int | None) -> int:
    """The revision to release: the pipeline's current one unless named; it must exist."""
    if revision is None:
        return pipeline.revision
    pipeline.version_of_revision(revision)  # InvalidCommand when it does not exist
    return revision


def _released(done: Changed[Deployment]) -> Released:
    made = done.state.releases[len(done.state.releases)]
    return Released(done.state, done.version, done.position, done.replayed, release=made)
