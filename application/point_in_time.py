"""Point-in-time reads (`?as_of=` on GET of a pipeline, a deployment and a job): the
resource as it was once every event up to a global position, or up to a time, was
stored, rebuilt from its own events in the event store (the source of truth; read
models hold only the present).

A position selects the aggregate's last event at or below it (a position is global, so
"as of 42" is the same instant for every resource); a time, its last event whose own
time is at or before it. The resource did not exist yet, or was deleted by then, or
belongs to a tenant the caller does not see: NotFound, exactly as for a GET of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.authorization import sees
from application.errors import NotFound
from application.event_store import NornEventStore
from application.principal import Principal
from domain.deployment import Deployment
from domain.job import Job
from domain.pipeline import Pipeline

A = TypeVar("A", bound=Aggregate)
AsOf = int | datetime
"""A global position, or a time (with its offset)."""


@dataclass(frozen=True)
class Past(Generic[A]):
    """An aggregate as it was: its state and version then, and who created it (the actor
    of its first event: not every aggregate keeps it as an attribute)."""

    state: A
    version: int
    created_by: str


class PointInTime:
    def __init__(self, store: NornEventStore) -> None:
        self._store = store

    def pipeline(self, principal: Principal, pipeline_id: UUID, as_of: AsOf) -> Past[Pipeline]:
        return self._at(principal, Pipeline, "pipeline", pipeline_id, as_of, lambda p: p.deleted)

    def deployment(
        self, principal: Principal, deployment_id: UUID, as_of: AsOf
    ) -> Past[Deployment]:
        # A retired deployment is still shown by GET (retired: true), so it is here too.
        return self._at(principal, Deployment, "deployment", deployment_id, as_of, lambda d: False)

    def job(self, principal: Principal, job_id: UUID, as_of: AsOf) -> Past[Job]:
        return self._at(principal, Job, "job", job_id, as_of, lambda j: j.deleted)

    def _at(
        self,
        principal: Principal,
        cls: type[A],
        kind: str,
        aggregate_id: UUID,
        as_of: AsOf,
        gone: Callable[[A], bool],
    ) -> Past[A]:
        events = self._until(aggregate_id, as_of)
        aggregate: Any = None
        for event in events:
            aggregate = event.mutate(aggregate)
        if (
            not isinstance(aggregate, cls)
            or not sees(principal, aggregate.tenant_id)  # type: ignore[attr-defined]
            or gone(aggregate)
        ):
            raise NotFound(kind, aggregate_id)
        return Past(aggregate, aggregate.version, events[0].actor)

    def _until(self, aggregate_id: UUID, as_of: AsOf) -> list[Any]:
        """The aggregate's events up to `as_of`, oldest first (none: it did not exist)."""
        events = list(self._store.stream(aggregate_id))
        if isinstance(as_of, datetime):
            kept = []
            for event in events:  # in version order; stop at the first one after
                if event.timestamp > as_of:
                    break
                kept.append(event)
            return kept
        version = self._store.version_at_position(aggregate_id, as_of) or 0
        return [e for e in events if e.originator_version <= version]
