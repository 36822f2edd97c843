"""The Pipeline aggregate: a named DAG of plugin steps with a full revision history.

Every change of definition is a new revision; a rollback is a forward event that restores
an earlier revision's definition, so history is never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, Conflict, FieldError, InvalidCommand, InvalidDefinition
from domain.event_trigger import EventTrigger, trigger_errors
from domain.events import CommandContext, NornCreated, NornEvent
from domain.text import nul_errors

NAME_MAX = 200
STEP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
MAX_STEPS = 500
MAX_TAGS = 50

PluginChecker = Callable[["StepSpec"], list[str]]
"""Checks one step's plugin and config (with its connection's, if it names one);
returns problems as 'field: message' texts (field relative to the step, e.g.
'config.path: required'). Supplied by the application over the plugin catalog, so the
domain stays free of plugin code."""


MAX_RETRIES = 20
MAX_DELAY = 86_400.0
MAX_TIMEOUT = 7 * 86_400.0


class StepSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One step. A failed attempt is retried `retries` times, after `retry_delay`
    seconds doubling per attempt (with jitter) up to `max_delay`; an attempt running
    longer than `timeout` seconds fails."""

    name: str
    plugin: str
    config: dict[str, Any] = {}
    depends_on: tuple[str, ...] = ()
    retries: int = 0
    retry_delay: float = 1.0
    max_delay: float = 60.0
    timeout: float | None = None
    connection: str | None = None
    """A connection of the tenant (README "Connections") whose config fills in what
    `config` leaves out."""


class PipelineDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a revision pins: the name, description, tags, the namespace of its
    tenant it is placed in (None: none) and the step graph."""

    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    steps: tuple[StepSpec, ...] = ()
    namespace: str | None = None
    timeout: float | None = None
    """Seconds a run may take in all; a run still going then is timed out."""
    triggers: tuple[EventTrigger, ...] = ()
    """Events of the tenant that start a run of this revision (domain/event_trigger.py)."""


class ClonedFrom(msgspec.Struct, frozen=True):
    pipeline_id: str
    revision: int


def validate_definition(
    definition: PipelineDefinition,
    check_plugin: PluginChecker,
    namespaces: Collection[str] = (),
) -> None:
    """Raise InvalidDefinition listing every rule the definition breaks. `namespaces` are
    the tenant's: the only ones a pipeline may be placed in."""
    errors = nul_errors(definition, "")
    if errors:  # nothing else can be judged sensibly on text the store cannot hold
        raise InvalidDefinition(errors)
    name = definition.name.strip()
    if not name:
        errors.append(FieldError("name", "must not be empty"))
    elif len(name) > NAME_MAX:
        errors.append(FieldError("name", f"must be at most {NAME_MAX} characters"))
    if len(definition.tags) > MAX_TAGS:
        errors.append(FieldError("tags", f"at most {MAX_TAGS} tags"))
    for i, tag in enumerate(definition.tags):
        if not tag.strip() or len(tag) > 100:
            errors.append(FieldError(f"tags[{i}]", "must be 1 to 100 characters"))
    errors.extend(namespace_errors(definition, namespaces))
    if definition.timeout is not None and not 0 < definition.timeout <= MAX_TIMEOUT:
        errors.append(FieldError("timeout", f"must be more than 0 and at most {MAX_TIMEOUT:g}"))
    if not definition.steps:
        errors.append(FieldError("steps", "a pipeline needs at least one step"))
    if len(definition.steps) > MAX_STEPS:
        errors.append(FieldError("steps", f"at most {MAX_STEPS} steps"))
    errors.extend(_step_errors(definition.steps, check_plugin))
    errors.extend(trigger_errors(definition.triggers))
    if errors:
        raise InvalidDefinition(errors)


def namespace_errors(
    definition: PipelineDefinition, namespaces: Collection[str]
) -> list[FieldError]:
    if definition.namespace is None or definition.namespace in namespaces:
        return []
    return [
        FieldError(
            "namespace",
            f"the tenant has no namespace {definition.namespace!r} "
            "(POST /api/v1/tenants/{id}/namespaces adds one)",
        )
    ]


def _step_errors(steps: tuple[StepSpec, ...], check_plugin: PluginChecker) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        if not STEP_NAME.fullmatch(step.name):
            errors.append(FieldError(f"{where}.name", "1-100 of letters, digits, '_', '-', '.'"))
        if step.name in seen:
            errors.append(FieldError(f"{where}.name", f"duplicate step name {step.name!r}"))
        seen.add(step.name)
        for problem in check_plugin(step):
            field, _, message = problem.partition(": ")
            errors.append(FieldError(f"{where}.{field}", message or problem))
        errors.extend(_retry_errors(step, where))
    names = {s.name for s in steps}
    for i, step in enumerate(steps):
        for dep in step.depends_on:
            if dep == step.name:
                errors.append(
                    FieldError(f"steps[{i}].depends_on", "a step cannot depend on itself")
                )
            elif dep not in names:
                errors.append(FieldError(f"steps[{i}].depends_on", f"unknown step {dep!r}"))
    cycle = find_cycle(steps)
    if cycle:
        errors.append(FieldError("steps", "dependency cycle: " + " -> ".join(cycle)))
    return errors


def _retry_errors(step: StepSpec, where: str) -> list[FieldError]:
    errors = []
    if not 0 <= step.retries <= MAX_RETRIES:
        errors.append(FieldError(f"{where}.retries", f"must be between 0 and {MAX_RETRIES}"))
    if not 0 <= step.retry_delay <= MAX_DELAY:
        errors.append(FieldError(f"{where}.retry_delay", f"must be between 0 and {MAX_DELAY:g}"))
    if not step.retry_delay <= step.max_delay <= MAX_DELAY:
        errors.append(
            FieldError(f"{where}.max_delay", f"must be between retry_delay and {MAX_DELAY:g}")
        )
    if step.timeout is not None and not 0 < step.timeout <= MAX_TIMEOUT:
        errors.append(
            FieldError(f"{where}.timeout", f"must be more than 0 and at most {MAX_TIMEOUT:g}")
        )
    return errors


def find_cycle(steps: tuple[StepSpec, ...]) -> list[str] | None:
    """Return one dependency cycle as a path (first node repeated at the end), or None."""
    graph = {s.name: [d for d in s.depends_on if d != s.name] for s in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            deps = graph.get(node, [])
            if index < len(deps):
                stack.append((node, index + 1))
                dep = deps[index]
                if state.get(dep) == 1:
                    return [*path[path.index(dep) :], dep]
                if dep in graph and not state.get(dep):
                    stack.append((dep, 0))
            else:
                state[node] = 2
                path.pop()
    return None


class PipelineEvent(NornEvent):
    aggregate_type = "pipeline"


class PipelineCreated(PipelineEvent, NornCreated):
    definition: PipelineDefinition
    cloned_from: ClonedFrom | None = None


class PipelineRevised(PipelineEvent):
    revision: int
    definition: PipelineDefinition

    def apply(self, aggregate: Pipeline) -> None:
        aggregate._set_revision(
            self.revision, self.definition, self.originator_version, self.timestamp
        )
        aggregate.updated_by = self.actor


class PipelineRolledBack(PipelineEvent):
    revision: int
    rolled_back_to: int
    previous_revision: int
    definition: PipelineDefinition

    def apply(self, aggregate: Pipeline) -> None:
        aggregate._set_revision(
            self.revision, self.definition, self.originator_version, self.timestamp
        )
        aggregate.updated_by = self.actor


class PipelineDeleted(PipelineEvent):
    def apply(self, aggregate: Pipeline) -> None:
        aggregate.deleted = True
        aggregate.updated_by = self.actor


class PipelineCredentialsShredded(PipelineEvent):
    """A platform admin shredded the credentials this pipeline's events held in clear
    (infrastructure/shredding.py rewrote them). `steps` is the current definition's,
    redacted: applying it brings every copy held in memory into line."""

    steps: tuple[StepSpec, ...]

    def apply(self, aggregate: Pipeline) -> None:
        aggregate.definition = msgspec.structs.replace(aggregate.definition, steps=self.steps)


class Pipeline(Aggregate):
    def __init__(
        self,
        tenant_id: str,
        definition: PipelineDefinition,
        cloned_from: ClonedFrom | None,
        actor: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.created_by = actor
        self.updated_by = actor
        self.definition = definition
        self.cloned_from = cloned_from
        self.revision = 1
        # Aggregate version at which each revision was made: a revision's definition is
        # read back by loading the aggregate at that version.
        self.revision_versions: dict[int, int] = {1: 1}
        self.deleted = False
        self.triggers_since: datetime | None = None
        """When the revision that declared the current triggers was made (None: they
        are the first revision's): they react to events from then on."""

    @classmethod
    def create(
        cls,
        *,
        pipeline_id: UUID,
        tenant_id: str,
        definition: PipelineDefinition,
        check_plugin: PluginChecker,
        ctx: CommandContext,
        cloned_from: ClonedFrom | None = None,
        namespaces: Collection[str] = (),
    ) -> Pipeline:
        validate_definition(definition, check_plugin, namespaces)
        return cls._create(
            PipelineCreated,
            id=pipeline_id,
            tenant_id=tenant_id,
            definition=definition,
            cloned_from=cloned_from,
            **ctx.event_fields(),
        )

    def revise(
        self,
        definition: PipelineDefinition,
        check_plugin: PluginChecker,
        ctx: CommandContext,
        namespaces: Collection[str] = (),
    ) -> bool:
        """Make `definition` the next revision. Returns False (and records nothing) when
        it equals the current one: a PUT of the same body is not a new revision."""
        self._require_live()
        validate_definition(definition, check_plugin, namespaces)
        if definition == self.definition:
            return False
        self._trigger(PipelineRevised, ctx, revision=self.revision + 1, definition=definition)
        return True

    def roll_back(
        self,
        to_revision: int,
        restored: PipelineDefinition,
        ctx: CommandContext,
        namespaces: Collection[str] = (),
    ) -> None:
        """Record a new revision whose definition is that of `to_revision`. Its namespace
        must still exist: it may have been removed since."""
        self._require_live()
        if to_revision not in self.revision_versions:
            raise InvalidCommand(
                f"revision {to_revision} does not exist (latest is {self.revision})", "revision"
            )
        if to_revision == self.revision:
            raise Conflict(f"revision {to_revision} is already the current one", "revision")
        problems = namespace_errors(restored, namespaces)
        if problems:
            raise InvalidDefinition(problems)
        self._trigger(
            PipelineRolledBack,
            ctx,
            revision=self.revision + 1,
            rolled_back_to=to_revision,
            previous_revision=self.revision,
            definition=restored,
        )

    def delete(self, ctx: CommandContext) -> None:
        self._require_live()
        self._trigger(PipelineDeleted, ctx)

    def shred_credentials(self, steps: tuple[StepSpec, ...], ctx: CommandContext) -> None:
        """Also for a deleted pipeline: its history is kept, and redacted."""
        self._trigger(PipelineCredentialsShredded, ctx, steps=steps)

    def version_of_revision(self, revision: int) -> int:
        if revision not in self.revision_versions:
            raise InvalidCommand(f"revision {revision} does not exist", "revision")
        return self.revision_versions[revision]

    def _require_live(self) -> None:
        if self.deleted:
            raise AggregateDeleted(f"pipeline {self.id} was deleted")

    def _trigger(
        self, event_class: type[PipelineEvent], ctx: CommandContext, **fields: Any
    ) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)

    def _set_revision(
        self, revision: int, definition: PipelineDefinition, version: int, at: datetime
    ) -> None:
        if definition.triggers != self.definition.triggers:
            self.triggers_since = at
        self.revision = revision
        self.definition = definition
        self.revision_versions[revision] = version
