"""Pipeline use cases: create, revise, roll back, clone, delete, validate, and the
history and revisions that are read from the event stream on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from application import unit_of_work
from application.authorization import sees
from application.commands import Aggregates
from application.conflicts import retry_on_conflict
from application.connections import connection_config
from application.errors import NotFound, VersionConflict
from application.event_store import NornEventStore
from application.idempotency import earlier_result, first_result, new_id
from application.name_claims import move_name, take_name
from application.pipeline_history import RevisionRecord, revision_records
from application.ports import PluginCatalog, SecretFacts, SecretRules, Usage
from application.principal import Principal
from application.quotas import UsageLedger
from application.results import Changed
from application.secrets import secret_facts
from application.tenants import writable_tenant
from domain.errors import FieldError, InvalidDefinition
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import (
    ClonedFrom,
    Pipeline,
    PipelineDefinition,
    PluginChecker,
    StepSpec,
    namespace_errors,
    validate_definition,
)
from domain.pipeline_deployments import PipelineDeployments, pipeline_deployments_id
from domain.tenant import Tenant


@dataclass(frozen=True, kw_only=True)
class RolledBack(Changed[Pipeline]):
    """A roll-back also answers which revision it restored and which one it replaced."""

    rolled_back_to: int
    previous_revision: int


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
        self._pipelines = Aggregates(
            store,
            Pipeline,
            "pipeline",
            scope=lambda principal, pipeline: sees(principal, pipeline.tenant_id),
            gone=lambda pipeline: pipeline.deleted,
            append=self._append,
        )

    def create(
        self, principal: Principal, definition: PipelineDefinition, ctx: CommandContext
    ) -> Changed[Pipeline]:
        return self._save_new(principal, definition, ctx)

    def revise(
        self,
        principal: Principal,
        pipeline_id: UUID,
        definition: PipelineDefinition,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Pipeline]:
        def decide(pipeline: Pipeline) -> list[NameClaim]:
            old_name = pipeline.definition.name
            namespaces = self._tenant(principal).namespaces
            check = self._step_checker(pipeline.tenant_id, definition)
            if not pipeline.revise(definition, check, ctx, namespaces):
                return []  # the same body again: no revision
            return self._rename(pipeline, old_name, ctx)

        return self._pipelines.change(principal, pipeline_id, decide, expected_version, ctx=ctx)

    def roll_back(
        self,
        principal: Principal,
        pipeline_id: UUID,
        revision: int,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> RolledBack:
        previous = 0

        def decide(pipeline: Pipeline) -> list[NameClaim]:
            nonlocal previous
            restored = self.definition_at(pipeline, revision)
            previous, old_name = pipeline.revision, pipeline.definition.name
            pipeline.roll_back(revision, restored, ctx, self._tenant(principal).namespaces)
            return self._rename(pipeline, old_name, ctx)

        done = self._pipelines.change(principal, pipeline_id, decide, expected_version, ctx=ctx)
        if done.replayed:  # an earlier attempt's: decide did not run now
            previous = done.state.revision - 1
        return RolledBack(
            done.state,
            done.version,
            done.position,
            done.replayed,
            rolled_back_to=revision,
            previous_revision=previous,
        )

    def clone(
        self, principal: Principal, pipeline_id: UUID, name: str, ctx: CommandContext
    ) -> Changed[Pipeline]:
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
    ) -> Changed[Pipeline]:
        earlier = self._pipelines.earlier(principal, pipeline_id, ctx)
        if earlier is not None:
            return earlier

        def attempt() -> Changed[Pipeline]:
            pipeline = self._pipelines.load(
                principal, pipeline_id, expected_version=expected_version
            )
            deployments = self._close_deployments(pipeline, ctx)
            pipeline.delete(ctx)
            claim = self._store.find(
                NameClaim, claim_id(_scope(pipeline.tenant_id), pipeline.definition.name)
            )
            if claim is not None:
                claim.release(str(pipeline.id), ctx)
            with self.ledger.release(pipeline.tenant_id, "max_pipelines", ctx) as usage:
                return self._pipelines.save(
                    pipeline,
                    claim,
                    deployments,
                    usage,
                    precondition=expected_version is not None,
                )

        # Each attempt loads the pipeline afresh: after a concurrent change of it, the
        # If-Match check (412) or NotFound answers; after a stale usage copy, it is saved.
        return retry_on_conflict(attempt)

    def _close_deployments(self, pipeline: Pipeline, ctx: CommandContext) -> PipelineDeployments:
        """HasDeployments (409) while deployments of the pipeline are not retired; else
        its count of them is closed in the delete's append (created closed if it never
        had one), so that a deployment created meanwhile conflicts with the delete."""
        pipeline_id = str(pipeline.id)
        deployments = self._store.find(
            PipelineDeployments, pipeline_deployments_id(pipeline_id)
        ) or PipelineDeployments.open(
            tenant_id=pipeline.tenant_id, pipeline_id=pipeline_id, ctx=ctx, closed=True
        )
        deployments.close(ctx)
        return deployments

    def validate(self, principal: Principal, definition: PipelineDefinition) -> list[FieldError]:
        namespaces: tuple[str, ...] = ()
        if principal.tenant_id is not None:
            namespaces = self._store.load(Tenant, UUID(principal.tenant_id), "tenant").namespaces
        check = self._step_checker(principal.tenant_id, definition)
        try:
            validate_definition(definition, check, namespaces)
        except InvalidDefinition as invalid:
            return invalid.errors
        return []

    def validate_existing(self, principal: Principal, pipeline_id: UUID) -> list[FieldError]:
        """The saved definition checked again: plugins and namespaces may have changed."""
        return self.validate(principal, self.load(principal, pipeline_id).definition)

    def _save_new(
        self,
        principal: Principal,
        definition: PipelineDefinition,
        ctx: CommandContext,
        cloned_from: ClonedFrom | None = None,
    ) -> Changed[Pipeline]:
        """Create a pipeline and save it with the claim on its name, within the tenant's
        quota. The claim is first taken as new without reading it (most names are
        claimed for the first time): the store refuses it if the name was ever claimed,
        and only then is the claim read, taken over if it was released, or refused as
        taken. A failed append leaves the aggregates without their events, so the retry
        builds them again. Asked with an Idempotency-Key, the pipeline's id derives from
        it: one an earlier attempt of the request created is answered as that attempt
        answered it, never created twice (application/idempotency.py)."""
        pipeline_id = new_id(ctx, "pipeline")
        earlier = earlier_result(self._store, Pipeline, pipeline_id, ctx)
        if earlier is not None:
            return earlier
        tenant = self._tenant(principal)

        def new_pipeline() -> Pipeline:
            return Pipeline.create(
                pipeline_id=pipeline_id,
                tenant_id=tenant.tenant_id,
                definition=definition,
                check_plugin=self._step_checker(tenant.tenant_id, definition),
                ctx=ctx,
                cloned_from=cloned_from,
                namespaces=tenant.namespaces,
            )

        scope, name = _scope(tenant.tenant_id), definition.name
        fresh_claim = True

        def attempt() -> Changed[Pipeline]:
            nonlocal fresh_claim
            pipeline = new_pipeline()
            claim = take_name(
                self._store,
                scope,
                name,
                str(pipeline_id),
                ctx,
                tenant_id=tenant.tenant_id,
                fresh=fresh_claim,
            )
            try:
                with self.ledger.take(tenant, "max_pipelines", ctx) as usage:
                    return self._pipelines.save(pipeline, claim, usage)
            except VersionConflict:
                # An id derived from an Idempotency-Key collides when an attempt of the
                # same request created the pipeline meanwhile: answer what it made.
                first = first_result(self._store, Pipeline, pipeline_id, ctx)
                if first is not None:
                    return first
                # Else the name was claimed before, or the usage kept here is stale
                # (it is read again next time).
                fresh_claim = False
                raise

        return retry_on_conflict(attempt)

    def _step_checker(self, tenant_id: str | None, definition: PipelineDefinition) -> PluginChecker:
        """Checks a step of `definition` as a new write of the tenant's, over the
        tenant's connection it names: its secret references name live secrets of this
        tenant (each looked up once) that the pipeline's namespace and the step's
        destinations may use."""
        found: dict[str, SecretFacts | None] = {}

        def lookup(name: str) -> SecretFacts | None:
            if name not in found:
                found[name] = (
                    None if tenant_id is None else secret_facts(self._store, tenant_id, name)
                )
            return found[name]

        rules = SecretRules(lookup, namespace=definition.namespace)

        def check(step: StepSpec) -> list[str]:
            connection = None
            if step.connection is not None and tenant_id is not None:
                connection = connection_config(self._store, tenant_id, step.connection)
            return self._plugins.check_step(step, rules, connection)

        return check

    def _append(
        self, pipeline: Pipeline, *others: Aggregate | None, precondition: bool = False
    ) -> int | None:
        """Save a pipeline (with its name claims). One placed in a namespace is saved
        while holding that namespace shared, after checking it still exists: removing a
        namespace holds it exclusively while it counts what is in it, so a pipeline
        cannot land in a namespace being removed. A delete places nothing."""
        unit = unit_of_work.current()
        if unit is not None:  # held around the unit's commit, for its pipelines as they are then
            unit.guard("pipeline namespaces", lambda: self._placed(*unit.kept_of(Pipeline)))
            return self._store.append(pipeline, *others, precondition=precondition)
        with self._placed(pipeline):
            return self._store.append(pipeline, *others, precondition=precondition)

    @contextmanager
    def _placed(self, *pipelines: Pipeline) -> Iterator[None]:
        """Hold the namespaces the pipelines are placed in shared, and check that they
        still exist (a deleted pipeline, or one in no namespace, holds nothing)."""
        placed = [p for p in pipelines if p.definition.namespace is not None and not p.deleted]
        if not placed:
            yield
            return
        places = [(p.tenant_id, p.definition.namespace or "") for p in placed]
        with self._usage.namespaces_hold(places):
            for pipeline in placed:
                tenant = self._store.load(Tenant, UUID(pipeline.tenant_id), "tenant")
                problems = namespace_errors(pipeline.definition, tenant.namespaces)
                if problems:
                    raise InvalidDefinition(problems)
            yield

    def _tenant(self, principal: Principal) -> Tenant:
        return writable_tenant(self._store, principal)

    def load(
        self, principal: Principal, pipeline_id: UUID, *, deleted_ok: bool = False
    ) -> Pipeline:
        return self._pipelines.load(principal, pipeline_id, deleted_ok=deleted_ok)

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
        return revision_records(self._store.stream(pipeline_id))

    def _rename(self, pipeline: Pipeline, old_name: str, ctx: CommandContext) -> list[NameClaim]:
        """Move the name claim when a revision changes the pipeline's name."""
        return move_name(
            self._store,
            _scope(pipeline.tenant_id),
            old_name,
            pipeline.definition.name,
            str(pipeline.id),
            ctx,
            tenant_id=pipeline.tenant_id,
        )
