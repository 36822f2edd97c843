"""Event-triggered runs: a process manager that starts a run of each pipeline whose
definition declares a trigger matching an event of its tenant (domain/event_trigger.py).

Decisions are made on the event store's facts: the pipeline as the store has it now (a
read model only nominates the pipelines that have triggers), the triggering run's depth
from its own events, and the tenant's day quota through the usage ledger. The run, its
TriggerFiring and the usage are one append; the firing's id derives from (pipeline,
event), so the same event can never start a second run of the pipeline, whoever reads
it again. A refusal (the chain too deep, the quota spent, the tenant suspended, bad
params) is recorded as TriggerRefused, never silent.

Tenant isolation is by construction: a tenant's event is only matched against that
tenant's pipelines, so a trigger naming another tenant's pipeline id never fires.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from application.conflicts import retry_on_conflict
from application.errors import VersionConflict
from application.event_store import NornEventStore
from application.runs import RunService
from domain.deployment import Deployment
from domain.errors import DomainError, NoActiveRelease, QuotaExceeded
from domain.event_trigger import (
    MAX_CHAIN_DEPTH,
    EventTrigger,
    TriggerFiring,
    TriggerSource,
    firing_id,
    triggered_run_id,
)
from domain.events import CommandContext
from domain.pipeline import Pipeline
from domain.run import Run, Trigger
from domain.tenant import Tenant, TenantStatus

log = logging.getLogger(__name__)
ACTOR = "system:triggers"


@dataclass(frozen=True)
class TenantEvent:
    """The facts of a stored event that triggers are matched on."""

    id: str
    type: str
    subject: str
    tenant_id: str
    position: int
    data: dict[str, Any]
    correlation_id: str
    time: datetime


@dataclass(frozen=True)
class Firing:
    target_id: str
    """The pipeline's or the deployment's id."""
    run_id: str | None
    refused: str | None = None
    """Why no run was started: the TriggerRefused code."""


Target = tuple[str, UUID]
"""("pipeline" | "deployment", its id): what a trigger role nominates."""


@dataclass
class _Plan:
    """What one matched trigger would start: a run of `pipeline` at `revision`."""

    target_id: str
    tenant_id: str
    pipeline_id: str
    pipeline: Pipeline | None
    """None when it is gone: the plan can only be refused."""
    revision: int
    params: dict[str, Any]
    trigger: Trigger
    deployment_id: str | None = None


class EventTriggers:
    def __init__(self, store: NornEventStore, runs: RunService) -> None:
        self._store = store
        self._runs = runs

    def handle(self, event: TenantEvent, candidates: Sequence[Target]) -> list[Firing]:
        """Start (or refuse) a run of each candidate pipeline or deployment of the
        event's tenant whose triggers, as the event store has them, the event matches;
        one this event fired before is left alone."""
        fired = []
        depth: int | None = None
        for kind, target_id in candidates:
            matched = self._matched(kind, target_id, event)
            if matched is None:
                continue
            owner, since, trigger = matched
            if event.time < since:
                continue  # triggers react to what happens after they were declared
            if self._store.find(TriggerFiring, firing_id(str(target_id), event.id)):
                continue  # handled before this pass read the event again
            if depth is None:
                depth = self._depth_of(event) + 1
            source = TriggerSource(event.id, event.type, event.position, depth)
            fired.append(self._fire(owner, trigger, source, event))
        return fired

    def _matched(
        self, kind: str, target_id: UUID, event: TenantEvent
    ) -> tuple[Pipeline | Deployment, datetime, EventTrigger] | None:
        """The live pipeline or deployment of the event's tenant, when it declares
        it; since when its triggers hold; the first trigger the event matches."""
        owner: Pipeline | Deployment | None
        if kind == "deployment":
            owner = self._store.find(Deployment, target_id)
            if owner is None or owner.retired:
                return None
            since = owner.triggers_since or owner.created_on
            triggers = owner.triggers
        else:
            owner = self._store.find(Pipeline, target_id)
            if owner is None or owner.deleted:
                return None
            # From the revision that declared them (a later edit of anything else must
            # not pass over the events between the two).
            since = owner.triggers_since or owner.created_on
            triggers = owner.definition.triggers
        if owner.tenant_id != event.tenant_id:
            return None
        trigger = _first_match(triggers, event)
        return (owner, since, trigger) if trigger is not None else None

    def _depth_of(self, event: TenantEvent) -> int:
        """How many triggered runs led to the event: its run's depth for a run's event,
        0 for anything else."""
        if not event.type.startswith("norn.run."):
            return 0
        run = self._store.find(Run, UUID(event.subject))
        return run.trigger.depth if run is not None and run.trigger.kind == "event" else 0

    def _fire(
        self,
        owner: Pipeline | Deployment,
        trigger: EventTrigger,
        source: TriggerSource,
        event: TenantEvent,
    ) -> Firing:
        ctx = CommandContext(ACTOR, correlation_id=event.correlation_id, causation_id=event.id)
        try:
            plan = self._plan(owner, trigger, source)
        except TargetRefused as refused:
            return self._refuse(refused.plan, source, refused.code, str(refused), ctx)
        if source.depth > MAX_CHAIN_DEPTH:
            reason = f"a chain of triggered runs stops at depth {MAX_CHAIN_DEPTH}"
            return self._refuse(plan, source, "CHAIN_TOO_DEEP", reason, ctx)
        tenant = self._store.find(Tenant, UUID(event.tenant_id))
        if tenant is None or tenant.status != TenantStatus.ACTIVE:
            status = tenant.status if tenant is not None else "gone"
            return self._refuse(plan, source, "PERMISSION_DENIED", f"tenant is {status}", ctx)
        run_id = triggered_run_id(plan.target_id, event.id)
        assert plan.pipeline is not None
        try:
            build = self._runs.new_run(
                plan.pipeline,
                plan.revision,
                run_id=run_id,
                params=plan.params,
                trigger=plan.trigger,
                ctx=ctx,
            )
        except DomainError as invalid:
            return self._refuse(plan, source, "VALIDATION_ERROR", str(invalid), ctx)

        def attempt() -> Firing:
            if self._store.find(TriggerFiring, firing_id(plan.target_id, event.id)):
                return Firing(plan.target_id, str(run_id))  # an earlier attempt went through
            firing = TriggerFiring.fired(
                tenant_id=plan.tenant_id,
                pipeline_id=plan.pipeline_id,
                deployment_id=plan.deployment_id,
                revision=plan.revision,
                source=source,
                run_id=run_id,
                ctx=ctx,
            )
            with self._runs.take_run_of_day(tenant, ctx) as usage:
                self._store.append(build(), firing, usage)
            return Firing(plan.target_id, str(run_id))

        try:
            return retry_on_conflict(attempt)
        except QuotaExceeded as refused:
            return self._refuse(plan, source, "QUOTA_EXCEEDED", str(refused), ctx)

    def _plan(
        self, owner: Pipeline | Deployment, trigger: EventTrigger, source: TriggerSource
    ) -> _Plan:
        """The run a matched trigger starts: the pipeline's current revision, or the
        deployment's active release with its variables (TargetRefused if it has none,
        or its pipeline is gone)."""
        run_trigger = Trigger("event", source.event_id, depth=source.depth)
        if isinstance(owner, Pipeline):
            return _Plan(
                str(owner.id),
                owner.tenant_id,
                str(owner.id),
                owner,
                owner.revision,
                dict(trigger.params),
                run_trigger,
            )
        pipeline = self._store.find(Pipeline, UUID(owner.pipeline_id))
        deployment_id = str(owner.id)
        plan = _Plan(
            deployment_id,
            owner.tenant_id,
            owner.pipeline_id,
            pipeline,
            0,
            dict(trigger.params),
            run_trigger,
            deployment_id,
        )
        if pipeline is None or pipeline.deleted:
            raise TargetRefused("RESOURCE_CONFLICT", "its pipeline was deleted", plan)
        try:
            active = owner.active()
        except NoActiveRelease as none:
            raise TargetRefused("RESOURCE_CONFLICT", str(none), plan) from None
        plan.revision = owner.releases[active.release].revision
        plan.params = owner.run_params(dict(trigger.params))
        plan.trigger = msgspec.structs.replace(
            run_trigger,
            environment=owner.environment,
            release=active.release,
            deployment_id=deployment_id,
        )
        return plan

    def _refuse(
        self,
        plan: _Plan,
        source: TriggerSource,
        code: str,
        reason: str,
        ctx: CommandContext,
    ) -> Firing:
        firing = TriggerFiring.refused_by(
            tenant_id=plan.tenant_id,
            pipeline_id=plan.pipeline_id,
            deployment_id=plan.deployment_id,
            revision=plan.revision,
            source=source,
            code=code,
            reason=reason,
            ctx=ctx,
        )
        try:
            self._store.append(firing)
        except VersionConflict:
            pass  # recorded already, by an earlier pass over the same event
        log.info("trigger of %s by %s refused: %s", plan.target_id, source.event_id, reason)
        return Firing(plan.target_id, None, code)


class TargetRefused(DomainError):
    """A matched trigger whose run cannot be planned: recorded as refused."""

    def __init__(self, code: str, reason: str, plan: _Plan) -> None:
        super().__init__(reason)
        self.code = code
        self.plan = plan


def _first_match(triggers: Sequence[EventTrigger], event: TenantEvent) -> EventTrigger | None:
    for trigger in triggers:
        if trigger.matches(event.type, event.subject, event.data):
            return trigger
    return None
