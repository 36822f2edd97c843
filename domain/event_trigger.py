"""Event triggers: a pipeline's definition may declare that an event of its tenant starts
a run of it (`{"on": "norn.run.succeeded", "where": {"pipeline_id": "<id>"}}`), and
each such start, or refusal, is recorded as a TriggerFiring.

A TriggerFiring's id derives from (pipeline, triggering event), so the event store
itself makes sure one event starts at most one run of a pipeline: a second attempt (a
process manager that died after its append and read the event again) collides with the
first on the store's primary key. A chain of triggered runs is cut at MAX_CHAIN_DEPTH,
and the cut is recorded (TriggerRefused), as is a start refused by a quota.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate

from domain.errors import FieldError
from domain.events import CommandContext, NornCreated, NornEvent

MAX_TRIGGERS = 10
MAX_WHERE = 10
MAX_CHAIN_DEPTH = 5
"""A run started by an event is one deeper than the run that caused the event (0 for
anything else); runs deeper than this are refused, so a cycle ends."""
UNTRIGGERING = ("norn.trigger.", "norn.usage.", "norn.name_claim.", "norn.pipeline_deployments.")
"""Events that start no run, whatever a trigger says: the triggers' own records, and the
write path's bookkeeping, appended beside the commands that cause it (a triggered run's
own append takes a unit of the day's runs). A trigger on them would start a run whose
bookkeeping starts the next, a chain no run's depth counts."""
ON_PATTERN = re.compile(r"^norn\.[a-z0-9_*?\[\]]+(\.[a-z0-9_*?\[\]]+){1,2}$")
WHERE_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
Scalar = str | int | float | bool


class EventTrigger(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Start a run when an event of the pipeline's tenant has a type matching `on` (a
    glob, with or without the `.v1` version suffix) and `where` each of its data fields
    (or `subject`, the id of the aggregate it happened to) equals the value given."""

    on: str
    where: dict[str, Scalar] = {}
    params: dict[str, Any] = {}
    """The run's parameters."""

    def matches(self, event_type: str, subject: str, data: dict[str, Any]) -> bool:
        if not may_trigger(event_type):
            return False
        unversioned = event_type.rsplit(".", 1)[0]
        if not (
            fnmatch.fnmatchcase(event_type, self.on) or fnmatch.fnmatchcase(unversioned, self.on)
        ):
            return False
        for key, expected in self.where.items():
            actual = subject if key == "subject" else data.get(key)
            if actual is None or _text(actual) != _text(expected):
                return False
        return True


def may_trigger(event_type: str) -> bool:
    """Whether an event of this type may start a run (see UNTRIGGERING)."""
    return not event_type.startswith(UNTRIGGERING)


def _only_untriggering(on: str) -> bool:
    """Whether a trigger's `on` is sure to match only events that start no run: its part
    before the first wildcard is within one of their kinds, or it matches the triggers'
    own records. (A wider glob, `norn.*`, is allowed: those events are passed over.)"""
    literal = re.split(r"[*?\[]", on, maxsplit=1)[0]
    return literal.startswith(UNTRIGGERING) or fnmatch.fnmatchcase(
        "norn.trigger.fired", on.rsplit(".v", 1)[0]
    )


def _text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def trigger_errors(triggers: tuple[EventTrigger, ...]) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(triggers) > MAX_TRIGGERS:
        errors.append(FieldError("triggers", f"at most {MAX_TRIGGERS} triggers"))
    for i, trigger in enumerate(triggers):
        where = f"triggers[{i}]"
        if not ON_PATTERN.fullmatch(trigger.on):
            errors.append(
                FieldError(
                    f"{where}.on",
                    "must be an event type or a glob of one, e.g. norn.run.succeeded",
                )
            )
        elif _only_untriggering(trigger.on):
            errors.append(
                FieldError(
                    f"{where}.on",
                    "triggers cannot start on trigger, usage, name-claim or"
                    " pipeline-deployments events (records and bookkeeping)",
                )
            )
        if len(trigger.where) > MAX_WHERE:
            errors.append(FieldError(f"{where}.where", f"at most {MAX_WHERE} conditions"))
        for key, value in trigger.where.items():
            if not WHERE_KEY.fullmatch(key):
                errors.append(FieldError(f"{where}.where.{key}", "must be a data field name"))
            elif isinstance(value, str) and len(value) > 200:
                errors.append(FieldError(f"{where}.where.{key}", "at most 200 characters"))
    return errors


def firing_id(target_id: str, event_id: str) -> UUID:
    """The one firing of a pipeline's (or a deployment's) triggers by one event."""
    return uuid5(NAMESPACE_URL, f"norn:trigger:{target_id}:{event_id}")


def triggered_run_id(target_id: str, event_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"norn:triggered-run:{target_id}:{event_id}")


class TriggerEvent(NornEvent):
    aggregate_type = "trigger"


class TriggerFired(TriggerEvent, NornCreated):
    pipeline_id: str
    revision: int
    event_id: str
    event_type: str
    event_position: int
    run_id: str
    depth: int
    deployment_id: str | None = None
    """A deployment's trigger: the deployment whose active release ran."""

    def apply(self, aggregate: TriggerFiring) -> None:
        aggregate.run_id = self.run_id


class TriggerRefused(TriggerEvent, NornCreated):
    pipeline_id: str
    revision: int
    event_id: str
    event_type: str
    event_position: int
    depth: int
    code: str
    """Why, as an API error code: CHAIN_TOO_DEEP, QUOTA_EXCEEDED, ..."""
    reason: str
    deployment_id: str | None = None

    def apply(self, aggregate: TriggerFiring) -> None:
        aggregate.refused = self.reason


class TriggerFiring(Aggregate):
    """What one event did to one pipeline's triggers: started `run_id`, or was refused."""

    def __init__(
        self, tenant_id: str, pipeline_id: str, depth: int, deployment_id: str | None = None
    ) -> None:
        self.tenant_id = tenant_id
        self.pipeline_id = pipeline_id
        self.deployment_id = deployment_id
        self.depth = depth
        self.run_id: str | None = None
        self.refused: str | None = None

    @classmethod
    def fired(
        cls,
        *,
        tenant_id: str,
        pipeline_id: str,
        revision: int,
        source: TriggerSource,
        run_id: UUID,
        ctx: CommandContext,
        deployment_id: str | None = None,
    ) -> TriggerFiring:
        return cls._create(
            TriggerFired,
            id=firing_id(deployment_id or pipeline_id, source.event_id),
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            deployment_id=deployment_id,
            revision=revision,
            run_id=str(run_id),
            **source.fields(),
            **ctx.event_fields(),
        )

    @classmethod
    def refused_by(
        cls,
        *,
        tenant_id: str,
        pipeline_id: str,
        revision: int,
        source: TriggerSource,
        code: str,
        reason: str,
        ctx: CommandContext,
        deployment_id: str | None = None,
    ) -> TriggerFiring:
        return cls._create(
            TriggerRefused,
            id=firing_id(deployment_id or pipeline_id, source.event_id),
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            deployment_id=deployment_id,
            revision=revision,
            code=code,
            reason=reason,
            **source.fields(),
            **ctx.event_fields(),
        )


class TriggerSource(msgspec.Struct, frozen=True):
    """The event that fires a trigger, and the depth the run it starts would have."""

    event_id: str
    event_type: str
    event_position: int
    depth: int

    def fields(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event_position": self.event_position,
            "depth": self.depth,
        }
