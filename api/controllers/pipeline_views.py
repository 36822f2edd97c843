"""Conversions between pipeline schemas, the domain and read-model rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from api.errors import error_code
from api.schemas.pipelines import (
    ChangesOut,
    ClonedFromOut,
    HistoryItem,
    NotRedeployedOut,
    PipelineRead,
    PipelineWrite,
    PipelineWritten,
    RedeployedOut,
    RevisionOut,
    RolledBackOut,
    StepOut,
    TriggerIn,
    TriggerOut,
)
from application.pipeline_history import RevisionRecord
from application.pipeline_rollbacks import Redeployment, RolledBackEverywhere
from application.point_in_time import Past
from application.results import Changed
from domain.event_trigger import EventTrigger
from domain.pipeline import Pipeline, PipelineDefinition, StepSpec
from infrastructure.redaction import redact_steps


def to_definition(body: PipelineWrite) -> PipelineDefinition:
    return PipelineDefinition(
        namespace=body.namespace,
        name=body.name.strip(),
        description=body.description,
        tags=tuple(body.tags),
        steps=tuple(
            StepSpec(
                s.name,
                s.plugin,
                s.config,
                tuple(s.depends_on),
                retries=s.retries,
                retry_delay=s.retry_delay,
                max_delay=s.max_delay,
                timeout=s.timeout,
                connection=s.connection,
            )
            for s in body.steps
        ),
        timeout=body.timeout,
        triggers=to_triggers(body.triggers),
    )


def to_triggers(triggers: Sequence[TriggerIn]) -> tuple[EventTrigger, ...]:
    return tuple(EventTrigger(t.on, dict(t.where), dict(t.params)) for t in triggers)


def triggers_out(triggers: Any) -> list[TriggerOut]:
    """From the definition's EventTriggers or the read model's JSON."""
    return [
        TriggerOut(t.on, dict(t.where), dict(t.params))
        if isinstance(t, EventTrigger)
        else TriggerOut(t["on"], t.get("where", {}), t.get("params", {}))
        for t in triggers
    ]


def _steps(definition: PipelineDefinition) -> list[StepOut]:
    """The steps as shown: a credential stored in clear reads as redacted."""
    return [
        StepOut(
            s.name,
            s.plugin,
            shown_config(s.plugin, s.config),
            list(s.depends_on),
            s.retries,
            s.retry_delay,
            s.max_delay,
            s.timeout,
            s.connection,
        )
        for s in definition.steps
    ]


def shown_config(plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    steps, found = redact_steps([{"plugin": plugin, "config": config}])
    return steps[0]["config"] if found else config


def written(result: Changed[Pipeline]) -> PipelineWritten:
    pipeline = result.state
    d = pipeline.definition
    cloned = pipeline.cloned_from
    return PipelineWritten(
        id=str(pipeline.id),
        tenant_id=pipeline.tenant_id,
        namespace=d.namespace,
        name=d.name,
        description=d.description,
        tags=list(d.tags),
        steps=_steps(d),
        timeout=d.timeout,
        triggers=triggers_out(d.triggers),
        revision=pipeline.revision,
        version=result.version,
        cloned_from=ClonedFromOut(cloned.pipeline_id, cloned.revision) if cloned else None,
        created_by=pipeline.created_by,
        updated_by=pipeline.updated_by,
        created_at=pipeline.created_on,
        updated_at=pipeline.modified_on,
        position=result.position,
        changed=result.changed,
    )


def read_of(past: Past[Pipeline]) -> PipelineRead:
    """A pipeline as it was (?as_of=): every field of GET comes from the aggregate."""
    pipeline = past.state
    d = pipeline.definition
    cloned = pipeline.cloned_from
    return PipelineRead(
        id=str(pipeline.id),
        tenant_id=pipeline.tenant_id,
        namespace=d.namespace,
        name=d.name,
        description=d.description,
        tags=list(d.tags),
        steps=_steps(d),
        timeout=d.timeout,
        revision=pipeline.revision,
        version=past.version,
        cloned_from=ClonedFromOut(cloned.pipeline_id, cloned.revision) if cloned else None,
        created_by=pipeline.created_by,
        updated_by=pipeline.updated_by,
        created_at=pipeline.created_on,
        updated_at=pipeline.modified_on,
    )


def rolled_back(result: RolledBackEverywhere) -> RolledBackOut:
    return RolledBackOut(
        id=str(result.state.id),
        revision=result.state.revision,
        rolled_back_to=result.rolled_back_to,
        previous_revision=result.previous_revision,
        version=result.version,
        position=result.position,
        redeployed=[_redeployed(r) for r in result.redeployments if r.released],
        not_redeployed=[_not_redeployed(r) for r in result.redeployments if r.refused],
    )


def _redeployed(redeployment: Redeployment) -> RedeployedOut:
    released = redeployment.released
    assert released is not None
    return RedeployedOut(
        deployment_id=redeployment.deployment_id,
        environment=redeployment.environment,
        release=released.release.release,
        outcome=str(released.release.outcome),
        run_id=released.release.run_id,
        position=released.position,
    )


def _not_redeployed(redeployment: Redeployment) -> NotRedeployedOut:
    refused = redeployment.refused
    assert refused is not None
    return NotRedeployedOut(
        deployment_id=redeployment.deployment_id,
        environment=redeployment.environment,
        code=error_code(refused),
        reason=str(refused),
    )


def from_row(row: dict[str, Any]) -> PipelineRead:
    cloned = row.get("cloned_from")
    return PipelineRead(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        namespace=row["namespace"],
        name=row["name"],
        description=row["description"],
        tags=list(row["tags"]),
        steps=[
            StepOut(
                s["name"],
                s["plugin"],
                shown_config(s["plugin"], s.get("config", {})),
                list(s.get("depends_on", [])),
                s.get("retries", 0),
                s.get("retry_delay", 1.0),
                s.get("max_delay", 60.0),
                s.get("timeout"),
                s.get("connection"),
            )
            for s in row["steps"]
        ],
        timeout=row.get("timeout"),
        triggers=triggers_out(row.get("triggers") or []),
        revision=row["revision"],
        version=row["version"],
        cloned_from=ClonedFromOut(cloned["pipeline_id"], cloned["revision"]) if cloned else None,
        created_by=row["created_by"],
        updated_by=row["updated_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def history_item(record: RevisionRecord) -> HistoryItem:
    cloned = record.cloned_from
    return HistoryItem(
        revision=record.revision,
        kind=record.kind,
        actor=record.actor,
        at=record.at,
        version=record.version,
        changes=ChangesOut(**record.changes),
        rolled_back_to=record.rolled_back_to,
        cloned_from=ClonedFromOut(cloned.pipeline_id, cloned.revision) if cloned else None,
    )


def revision_out(pipeline_id: str, record: RevisionRecord) -> RevisionOut:
    d = record.definition
    return RevisionOut(
        pipeline_id=pipeline_id,
        revision=record.revision,
        kind=record.kind,
        actor=record.actor,
        at=record.at,
        namespace=d.namespace,
        name=d.name,
        description=d.description,
        tags=list(d.tags),
        steps=_steps(d),
        triggers=triggers_out(d.triggers),
    )
