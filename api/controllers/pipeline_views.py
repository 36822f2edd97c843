"""Conversions between pipeline schemas, the domain and read-model rows."""

from __future__ import annotations

from typing import Any

from api.schemas.pipelines import (
    ChangesOut,
    ClonedFromOut,
    HistoryItem,
    PipelineRead,
    PipelineWrite,
    PipelineWritten,
    RevisionOut,
    RolledBackOut,
    StepOut,
)
from application.pipeline_history import RevisionRecord
from application.pipelines import RolledBack
from application.results import Changed
from domain.pipeline import Pipeline, PipelineDefinition, StepSpec


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
            )
            for s in body.steps
        ),
        timeout=body.timeout,
    )


def _steps(definition: PipelineDefinition) -> list[StepOut]:
    return [
        StepOut(
            s.name,
            s.plugin,
            s.config,
            list(s.depends_on),
            s.retries,
            s.retry_delay,
            s.max_delay,
            s.timeout,
        )
        for s in definition.steps
    ]


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


def rolled_back(result: RolledBack) -> RolledBackOut:
    return RolledBackOut(
        str(result.state.id),
        result.state.revision,
        result.rolled_back_to,
        result.previous_revision,
        result.version,
        result.position,
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
                s.get("config", {}),
                list(s.get("depends_on", [])),
                s.get("retries", 0),
                s.get("retry_delay", 1.0),
                s.get("max_delay", 60.0),
                s.get("timeout"),
            )
            for s in row["steps"]
        ],
        timeout=row.get("timeout"),
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
    )
