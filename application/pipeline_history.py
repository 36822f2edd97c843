"""A pipeline's history: its revisions as its own event stream tells them (read from the
stream on purpose, so that history needs no read model and survives a delete)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.pipeline import (
    ClonedFrom,
    PipelineCreated,
    PipelineCredentialsShredded,
    PipelineDefinition,
    PipelineDeleted,
    PipelineRevised,
    PipelineRolledBack,
)


@dataclass(frozen=True)
class RevisionRecord:
    """One item of a pipeline's history."""

    revision: int
    kind: str  # created | revised | rolled_back | deleted
    actor: str
    at: datetime
    version: int
    definition: PipelineDefinition
    changes: dict[str, list[str]] = field(default_factory=dict)
    rolled_back_to: int | None = None
    cloned_from: ClonedFrom | None = None


def revision_records(events: Iterable[Any]) -> list[RevisionRecord]:
    """Every revision in a pipeline's events, oldest first, each with what changed
    against the one before; a delete is the last revision again, marked deleted."""
    records: list[RevisionRecord] = []
    previous: PipelineDefinition | None = None
    revision = 0
    for event in events:
        rolled_back_to = None
        if isinstance(event, PipelineCreated):
            kind, revision, definition = "created", 1, event.definition
        elif isinstance(event, PipelineRolledBack):
            kind, revision, definition = "rolled_back", event.revision, event.definition
            rolled_back_to = event.rolled_back_to
        elif isinstance(event, PipelineRevised):
            kind, revision, definition = "revised", event.revision, event.definition
        elif isinstance(event, PipelineCredentialsShredded):
            continue  # not a revision: the stored ones were redacted in place
        else:
            assert isinstance(event, PipelineDeleted) and previous is not None
            # Not a revision: the last one, marked deleted (who and when, for audit).
            kind, definition = "deleted", previous
        records.append(
            RevisionRecord(
                revision=revision,
                kind=kind,
                actor=event.actor,
                at=event.timestamp,
                version=event.originator_version,
                definition=definition,
                changes=summarize_changes(previous, definition),
                rolled_back_to=rolled_back_to,
                cloned_from=getattr(event, "cloned_from", None),
            )
        )
        previous = definition
    return records


def summarize_changes(
    before: PipelineDefinition | None, after: PipelineDefinition
) -> dict[str, list[str]]:
    """Steps added/removed/changed and top-level fields changed between two revisions."""
    if before is None:
        return {
            "steps_added": [s.name for s in after.steps],
            "steps_removed": [],
            "steps_changed": [],
            "fields_changed": [],
        }
    old = {s.name: s for s in before.steps}
    new = {s.name: s for s in after.steps}
    return {
        "steps_added": [n for n in new if n not in old],
        "steps_removed": [n for n in old if n not in new],
        "steps_changed": [n for n in new if n in old and new[n] != old[n]],
        "fields_changed": [
            f
            for f in ("name", "description", "tags", "namespace")
            if getattr(before, f) != getattr(after, f)
        ],
    }
