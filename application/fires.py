"""What a scheduler pass plans and what becomes of it: the jobs a pass holds (`DueJob`),
each job's outcome to bookkeep and count (`Outcome`), and the fires planned and built
before they are queued (`Fire`, `Prepared`). application/job_firing.py makes and queues
them; infrastructure/scheduler_role.py stores the outcomes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from application.fire_plan import FireState
from domain.job import JobSpec
from domain.run import Run


@dataclass(frozen=True)
class DueJob:
    """A job a pass holds: its definition (from the jobs read model, at `version`) and
    its bookkeeping (from job_schedules)."""

    job_id: UUID
    tenant_id: str
    version: int
    spec: JobSpec
    state: FireState
    last_run_id: str | None = None


@dataclass
class Outcome:
    """What became of one job in a pass: its bookkeeping to store, and what to count."""

    job: DueJob
    state: FireState
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    refused: int = 0
    late: int = 0
    last_run_id: str | None = None
    last_run: datetime | None = None
    disabled: str | None = None
    """Why the job was disabled now (its target is gone); it is not fired."""
    more: bool = False
    """The plan's scan stopped at its limit: plan the job again at once."""
    jitter: float = 0.0
    delays: list[float] = field(default_factory=list)
    """Each queued fire's delay in seconds: queued time minus nominal time plus jitter."""


@dataclass
class Fire:
    outcome: Outcome
    scheduled_for: datetime
    build: Callable[[], Run]
    run_id: UUID
    targets: frozenset[UUID]
    """The pipeline it runs and the deployment it runs for (if any)."""


@dataclass
class Prepared:
    """A pass's plans, with their runs built (JobFiring.prepare), waiting to be queued
    (JobFiring.queue)."""

    ahead: bool
    """Prepared before `at`: re-checked and stamped when queued."""
    outcomes: list[Outcome] = field(default_factory=list)
    fires: dict[str, list[Fire]] = field(default_factory=dict)
    """By tenant id."""
    events: dict[str, list[Any]] = field(default_factory=dict)
    """The events of each tenant's runs, built."""
    later: list[DueJob] = field(default_factory=list)
    """Jobs to plan when queued: their previous run still ran when prepared ahead."""
    targets: dict[UUID, int] = field(default_factory=dict)
    """The version of each pipeline and deployment read."""


def counts(outcomes: list[Outcome]) -> dict[str, Any]:
    """Totals of a pass, for its log line and metrics."""
    names = ("fired", "skipped", "missed", "refused", "late")
    return {name: sum(getattr(o, name) for o in outcomes) for name in names}
