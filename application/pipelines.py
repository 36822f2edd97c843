"""Pipeline use cases: create, revise, roll back, clone, delete, validate, and the
history and revisions that are read from the event stream on purpose."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import Aggregate

from application.authorization import check_owner
from application.errors import NotFound, VersionConflict
from application.event_store import NornEventStore, check_expected_version
from application.ports import PluginCatalog, Usage
from application.principal import Principal
from application.quotas import UsageLedger, retry_on_conflict
from application.tenants import writable_tenant
from domain.errors import FieldError, InvalidDefinition
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import (
    ClonedFrom,
    Pipeline,
    PipelineCreated,
    PipelineDefinition,
    PipelineDeleted,
    PipelineRevised,
    PipelineRolledBack,
    namespace_errors,
    validate_definition,
)
from domain.tenant import Tenant


@dataclass(frozen=True)
class PipelineChanged:
    """What every pipeline command answers: the state after it and its position."""

    pipeline: Pipeline
    position: int | None


@dataclass(frozen=True)
class RolledBack(PipelineChanged):
    rolled_back_to: int = 0
    previous_revision: int = 0


@dataclass(frozen=True)
class RevisionRecord:
    """One item of a pipeline's history."""

    revision: int
    kind: str  # created | revised | rolled_back
    actor: str
    at: datetime
    version: int
    definition: PipelineDefinition
    changes: dict[str, list[str]] = field(default_factory=dict)
    rolled_back_to: int | None = None
    cloned_from: ClonedFrom | None = None


def _scope(tenant_id: str) -> str:
    return f"pipeline:{tenant_id}"


class PipelineService:
    def __init__(
        self,
        store: NornEventStore,
        plugins: PluginCatalog,
        usage: Usage,
        ledger: UsageLedger | None = None,
    ) -> None:
        self._store = store
        self._plugins = plugins
        self._usage = usage
        self.ledger = ledger or UsageLedger(store, usage)
        """Quota usage on the write side; shared with the run service (api/bootstrap.py)."""

    def create(
        self, principal: Principal, definition: PipelineDefinition, ctx: CommandContext
    ) -> PipelineChanged:
        return self._save_new(principal, definition, ctx)

    def revise(
        self,
        principal: Principal,
        pipeline_id: UUID,
        definition: PipelineDefinition,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> PipelineChanged:
        pipeline = self.load(principal, pipeline_id)
        check_expected_version(pipeline.version, expected_version)
        old_name = pipeline.definition.name
        namespaces = self._tenant(principal).namespaces
        if not pipeline.revise(definition, self._plugins.check, ctx, namespaces):
            return PipelineChanged(pipeline, None)
        claims = self._rename(pipeline, old_name, ctx)
        return PipelineChanged(
            pipeline,
            self._append(pipeline, *claims, precondition=expected_version is not None),
        )

    def roll_back(
        self,
        principal: Principal,
        pipeline_id: UUID,
        revision: int,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> RolledBack:
        pipeline = self.load(principal, pipeline_id)
        check_expected_version(pipeline.version, expected_version)
        restored = self.definition_at(pipeline, revision)
        previous = pipeline.revision
        old_name = pipeline.definition.name
        pipeline.roll_back(revision, restored, ctx, self._tenant(principal).namespaces)
        claims = self._rename(pipeline, old_name, ctx)
        position = self._append(pipeline, *claims, precondition=expected_version is not None)
        return RolledBack(pipeline, position, rolled_back_to=revision, previous_revision=previous)

    def clone(
        self, principal: Principal, pipeline_id: UUID, name: str, ctx: CommandContext
    ) -> PipelineChanged:
        source = self.load(principal, pipeline_id)
        definition = msgspec.structs.replace(source.definition, name=name)
        cloned_from = ClonedFrom(str(source.id), source.revision)
        return self._save_new(principal, definition, ctx, cloned_from)

    def delete(
        self,
        principal: Principal,
        pipeline_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> PipelineChanged:
        def attempt() -> PipelineChanged:
            pipeline = self.load(principal, pipeline_id)
            check_expected_version(pipeline.version, expected_version)
            pipeline.delete(ctx)
            claim = self._store.find(
                NameClaim, claim_id(_scope(pipeline.tenant_id), pipeline.definition.name)
            )
            if claim is not None:
                claim.release(str(pipeline.id), ctx)
            with self.ledger.release(pipeline.tenant_id, "max_pipelines", ctx) as usage:
                position = self._store.append(
                    pipeline, claim, usage, precondition=expected_version is not None
                )
            return PipelineChanged(pipeline, position)

        # Each attempt loads the pipeline afresh: after a concurrent change of it, the
        # If-Match check (412) or NotFound answers; after a stale usage copy, it is saved.
        return retry_on_conflict(attempt)

    def validate(self, principal: Principal, definition: PipelineDefinition) -> list[FieldError]:
        namespaces: tuple[str, ...] = ()
        if principal.tenant_id is not None:
            namespaces = self._store.load(Tenant, UUID(principal.tenant_id), "tenant").namespaces
        try:
            validate_definition(definition, self._plugins.check, namespaces)
        except InvalidDefinition as invalid:
            return invalid.errors
        return []

    def _save_new(
        self,
        principal: Principal,
        definition: PipelineDefinition,
        ctx: CommandContext,
        cloned_from: ClonedFrom | None = None,
    ) -> PipelineChanged:
        """Create a pipeline and save it with the claim on its name, within the tenant's
        quota. The claim is first taken as new without reading it (most names are
        claimed for the first time): the store refuses it if the name was ever claimed,
        and only then is the claim read, taken over if it was released, or refused as
        taken. A failed append leaves the aggregates without their events, so the retry
        builds them again."""
        tenant = self._tenant(principal)
        pipeline_id = uuid4()

        def new_pipeline() -> Pipeline:
            return Pipeline.create(
                pipeline_id=pipeline_id,
                tenant_id=tenant.tenant_id,
                definition=definition,
                check_plugin=self._plugins.check,
                ctx=ctx,
                cloned_from=cloned_from,
                namespaces=tenant.namespaces,
            )

        scope, name = _scope(tenant.tenant_id), definition.name
        fresh_claim = True

        def attempt() -> PipelineChanged:
            nonlocal fresh_claim
            pipeline = new_pipeline()
            if fresh_claim:
                claim = NameClaim.claim_new(
                    tenant_id=tenant.tenant_id,
                    scope=scope,
                    name=name,
                    holder_id=str(pipeline_id),
                    ctx=ctx,
                )
            else:
                claim = self._claim_name(tenant.tenant_id, name, pipeline.id, ctx)
            with self.ledger.take(tenant, "max_pipelines", ctx) as usage:
                try:
                    return PipelineChanged(pipeline, self._append(pipeline, claim, usage))
                except VersionConflict:
                    # A fresh pipeline id cannot collide: the name was claimed before,
                    # or the usage kept here is stale (it is read again next time).
                    fresh_claim = False
                    raise

        return retry_on_conflict(attempt)

    def _append(
        self, pipeline: Pipeline, *others: Aggregate | None, precondition: bool = False
    ) -> int | None:
        """Save a pipeline (with its name claims). One placed in a namespace is saved
        while holding that namespace shared, after checking it still exists: removing a
        namespace holds it exclusively while it counts what is in it, so a pipeline
        cannot land in a namespace being removed."""
        namespace = pipeline.definition.namespace
        if namespace is None:
            return self._store.append(pipeline, *others, precondition=precondition)
        with self._usage.namespace_hold(pipeline.tenant_id, namespace, exclusive=False):
            tenant = self._store.load(Tenant, UUID(pipeline.tenant_id), "tenant")
            problems = namespace_errors(pipeline.definition, tenant.namespaces)
            if problems:
                raise InvalidDefinition(problems)
            return self._store.append(pipeline, *others, precondition=precondition)

    def _tenant(self, principal: Principal) -> Tenant:
        return writable_tenant(self._store, principal)

    def load(
        self, principal: Principal, pipeline_id: UUID, *, deleted_ok: bool = False
    ) -> Pipeline:
        pipeline = self._store.load(Pipeline, pipeline_id, "pipeline")
        check_owner(principal, "pipeline", pipeline_id, pipeline.tenant_id)
        if pipeline.deleted and not deleted_ok:
            raise NotFound("pipeline", pipeline_id)
        return pipeline

    def definition_at(self, pipeline: Pipeline, revision: int) -> PipelineDefinition:
        if revision == pipeline.revision:
            return pipeline.definition  # the latest is at hand: no replay
        version = pipeline.version_of_revision(revision)
        return self._store.load(Pipeline, pipeline.id, "pipeline", version=version).definition

    def revision(self, principal: Principal, pipeline_id: UUID, revision: int) -> RevisionRecord:
        for record in self.history(principal, pipeline_id):
            if record.revision == revision:
                return record
        raise NotFound("revision", f"{pipeline_id}/{revision}")

    def history(self, principal: Principal, pipeline_id: UUID) -> list[RevisionRecord]:
        """Every revision, oldest first, each with what changed against the one before.
        Readable after a delete: history is kept for audit."""
        self.load(principal, pipeline_id, deleted_ok=True)
        records: list[RevisionRecord] = []
        previous: PipelineDefinition | None = None
        revision = 0
        for event in self._store.stream(pipeline_id):
            rolled_back_to = None
            if isinstance(event, PipelineCreated):
                kind, revision, definition = "created", 1, event.definition
            elif isinstance(event, PipelineRolledBack):
                kind, revision, definition = "rolled_back", event.revision, event.definition
                rolled_back_to = event.rolled_back_to
            elif isinstance(event, PipelineRevised):
                kind, revision, definition = "revised", event.revision, event.definition
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

    def _claim_name(
        self, tenant_id: str, name: str, holder: UUID, ctx: CommandContext
    ) -> NameClaim:
        scope = _scope(tenant_id)
        claim = self._store.find(NameClaim, claim_id(scope, name))
        if claim is None:
            return NameClaim.claim_new(
                tenant_id=tenant_id, scope=scope, name=name, holder_id=str(holder), ctx=ctx
            )
        claim.claim(str(holder), ctx)
        return claim

    def _rename(self, pipeline: Pipeline, old_name: str, ctx: CommandContext) -> list[NameClaim]:
        """Move the name claim when a revision changes the pipeline's name."""
        new_name = pipeline.definition.name
        if claim_id(_scope(pipeline.tenant_id), old_name) == claim_id(
            _scope(pipeline.tenant_id), new_name
        ):
            return []
        claims = [self._claim_name(pipeline.tenant_id, new_name, pipeline.id, ctx)]
        old = self._store.find(NameClaim, claim_id(_scope(pipeline.tenant_id), old_name))
        if old is not None:
            old.release(str(pipeline.id), ctx)
            claims.append(old)
        return claims


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
