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

from application.errors import VersionConflict
from application.event_store import NornEventStore
from application.quotas import retry_on_conflict
from application.runs import RunService
from domain.errors import DomainError, QuotaExceeded
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
    pipeline_id: str
    run_id: str | None
    refused: str | None = None
    """Why no run was started: the TriggerRefused code."""


class EventTriggers:
    def __init__(self, store: NornEventStore, runs: RunService) -> None:
        self._store = store
        self._runs = runs

    def handle(self, event: TenantEvent, candidates: Sequence[UUID]) -> list[Firing]:
        """Start (or refuse) a run of each candidate pipeline of the event's tenant whose
        current definition has a trigger the event matches; a pipeline this event
        fired before is left alone."""
        fired = []
        depth: int | None = None
        for pipeline_id in candidates:
            pipeline = self._store.find(Pipeline, pipeline_id)
            if pipeline is None or pipeline.deleted or pipeline.tenant_id != event.tenant_id:
                continue
            if event.time < pipeline.modified_on:
                continue  # triggers react to what happens after the revision declaring them
            trigger = _first_match(pipeline.definition.triggers, event)
            if trigger is None:
                continue
            if self._store.find(TriggerFiring, firing_id(str(pipeline_id), event.id)):
                continue  # handled before this pass read the event again
            if depth is None:
                depth = self._depth_of(event) + 1
            source = TriggerSource(event.id, event.type, event.position, depth)
            fired.append(self._fire(pipeline, trigger, source, event))
        return fired

    def _depth_of(self, event: TenantEvent) -> int:
        """How many triggered runs led to the event: its run's depth for a run's event,
        0 for anything else."""
        if not event.type.startswith("norn.run."):
            return 0
        run = self._store.find(Run, UUID(event.subject))
        return run.trigger.depth if run is not None and run.trigger.kind == "event" else 0

    def _fire(
        self, pipeline: Pipeline, trigger: EventTrigger, source: TriggerSource, event: TenantEvent
    ) -> Firing:
        pipeline_id = str(pipeline.id)
        ctx = CommandContext(ACTOR, correlation_id=event.correlation_id, causation_id=event.id)
        if source.depth > MAX_CHAIN_DEPTH:
            reason = f"a chain of triggered runs stops at depth {MAX_CHAIN_DEPTH}"
            return self._refuse(pipeline, source, "CHAIN_TOO_DEEP", reason, ctx)
        tenant = self._store.find(Tenant, UUID(event.tenant_id))
        if tenant is None or tenant.status != TenantStatus.ACTIVE:
            status = tenant.status if tenant is not None else "gone"
            return self._refuse(pipeline, source, "PERMISSION_DENIED", f"tenant is {status}", ctx)
        run_id = triggered_run_id(pipeline_id, event.id)
        try:
            build = self._runs.new_run(
                pipeline,
                pipeline.revision,
                run_id=run_id,
                params=dict(trigger.params),
                trigger=Trigger("event", event.id, depth=source.depth),
                ctx=ctx,
            )
        except DomainError as invalid:
            return self._refuse(pipeline, source, "VALIDATION_ERROR", str(invalid), ctx)

        def attempt() -> Firing:
            if self._store.find(TriggerFiring, firing_id(pipeline_id, event.id)):
                return Firing(pipeline_id, str(run_id))  # an earlier attempt went through
            firing = TriggerFiring.fired(
                tenant_id=event.tenant_id,
                pipeline_id=pipeline_id,
                revision=pipeline.revision,
                source=source,
                run_id=run_id,
                ctx=ctx,
            )
            with self._runs.take_run_of_day(tenant, ctx) as usage:
                self._store.append(build(), firing, usage)
            return Firing(pipeline_id, str(run_id))

        try:
            return retry_on_conflict(attempt)
        except QuotaExceeded as refused:
            return self._refuse(pipeline, source, "QUOTA_EXCEEDED", str(refused), ctx)

    def _refuse(
        self,
        pipeline: Pipeline,
        source: TriggerSource,
        code: str,
        reason: str,
        ctx: CommandContext,
    ) -> Firing:
        firing = TriggerFiring.refused_by(
            tenant_id=pipeline.tenant_id,
            pipeline_id=str(pipeline.id),
            revision=pipeline.revision,
            source=source,
            code=code,
            reason=reason,
            ctx=ctx,
        )
        try:
            self._store.append(firing)
        except VersionConflict:
            pass  # recorded already, by an earlier pass over the same event
        log.info("trigger of pipeline %s by %s refused: %s", pipeline.id, source.event_id, reason)
        return Firing(str(pipeline.id), None, code)


def _first_match(triggers: Sequence[EventTrigger], event: TenantEvent) -> EventTrigger | None:
    for trigger in triggers:
        if trigger.matches(event.type, event.subject, event.data):
            return trigger
    return None
