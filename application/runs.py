"""Run use cases: trigger a run of a pipeline (by id or by name), cancel it, retry it.
Executing runs is the executor's (application/executor.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from uuid import UUID

import msgspec

from application.authorization import require_tenant, sees
from application.commands import Aggregates
from application.conflicts import retry_on_conflict
from application.errors import NotFound, VersionConflict
from application.event_store import NornEventStore
from application.idempotency import earlier_result, first_result, new_id
from application.pipelines import PipelineService
from application.ports import Usage
from application.principal import Principal
from application.quotas import UsageLedger
from application.results import Changed
from application.tenants import writable_tenant
from domain.errors import Conflict, InvalidCommand
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.pipeline import Pipeline
from domain.run import Run, RunStatus, Trigger
from domain.tenant import Tenant
from domain.text import nul_errors
from domain.usage import Usage as UsageAggregate

MAX_PARAMS_BYTES = 65_536
MAX_RETRY_CHAIN = 1_000
"""How far back a retry looks for the run its chain of retries began with."""
RETRYABLE = frozenset(
    {RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.CRASHED}
)


class RunService:
    def __init__(
        self,
        store: NornEventStore,
        pipelines: PipelineService,
        usage: Usage,
        max_attempts: int = 3,
        ledger: UsageLedger | None = None,
    ) -> None:
        self._store = store
        self._pipelines = pipelines
        self._usage = usage
        self._ledger = ledger or pipelines.ledger
        self._max_attempts = max_attempts
        """How many executions a run gets when executors vanish (then it is crashed)."""
        self._runs = Aggregates(
            store, Run, "run", scope=lambda principal, run: sees(principal, run.tenant_id)
        )

    def trigger(
        self,
        principal: Principal,
        pipeline_id: UUID,
        *,
        params: dict[str, Any],
        ctx: CommandContext,
        revision: int | None = None,
        trigger: Trigger | None = None,
    ) -> Changed[Run]:
        """Queue a run of the pipeline's latest revision (or of `revision`)."""
        pipeline = self._pipelines.load(principal, pipeline_id)
        number = pipeline.revision if revision is None else revision
        run_id = new_id(ctx, "run")
        new_run = self.new_run(
            pipeline,
            number,
            run_id=run_id,
            params=params,
            trigger=trigger or Trigger(principal.kind, principal.subject_id),
            ctx=ctx,
        )
        return self._queue(principal, ctx, run_id, new_run)

    def new_run(
        self,
        pipeline: Pipeline,
        revision: int,
        *,
        run_id: UUID,
        params: dict[str, Any],
        trigger: Trigger,
        ctx: CommandContext,
    ) -> Callable[[], Run]:
        """How to queue a run of the pipeline's `revision` (checked now): each call builds
        it afresh, for a command whose attempts each save it. A command that queues a run
        in its own append (a deployment's verification run) saves it within
        `take_run_of_day`."""
        definition = self._pipelines.definition_at(pipeline, revision)
        _check_params(params)
        return lambda: Run.queue(
            run_id=run_id,
            tenant_id=pipeline.tenant_id,
            pipeline_id=str(pipeline.id),
            pipeline_name=definition.name,
            revision=revision,
            definition=definition,
            params=params,
            trigger=trigger,
            ctx=ctx,
            max_attempts=self._max_attempts,
        )

    def take_run_of_day(
        self, tenant: Tenant, ctx: CommandContext, amount: int = 1
    ) -> AbstractContextManager[UsageAggregate]:
        """The day's take of `amount` runs queued in another command's append: save the
        usage it yields in that append, inside the block."""
        return self._ledger.take(tenant, "max_runs_per_day", ctx, amount)

    def trigger_by_name(
        self, principal: Principal, name: str, *, params: dict[str, Any], ctx: CommandContext
    ) -> Changed[Run]:
        tenant_id = require_tenant(principal)
        claim = self._store.find(NameClaim, claim_id(f"pipeline:{tenant_id}", name))
        if claim is None or claim.holder_id is None:
            raise NotFound("pipeline", name)
        return self.trigger(principal, UUID(claim.holder_id), params=params, ctx=ctx)

    def load(self, principal: Principal, run_id: UUID) -> Run:
        return self._runs.load(principal, run_id)

    def cancel(self, principal: Principal, run_id: UUID, ctx: CommandContext) -> Changed[Run]:
        """A queued run is cancelled at once; a running one is asked to stop, and its
        executor stops it promptly (also inside a long step). Asking again changes
        nothing (position None).

        The run's executor appends to it as the run goes (a claim, each step), so a
        cancel often loses the race for the run's next version; it asks no precondition
        of the run, so it is decided again on what the executor saved (a run claimed
        meanwhile is asked to stop, one that ended refuses), not answered 409."""

        def decide(run: Run) -> None:
            run.request_cancel(f"cancelled by {principal.actor}", ctx)

        return retry_on_conflict(lambda: self._runs.change(principal, run_id, decide, ctx=ctx))

    def retry(
        self,
        principal: Principal,
        run_id: UUID,
        *,
        from_failed_step: bool,
        ctx: CommandContext,
    ) -> Changed[Run]:
        """A new run of the same revision, definition and params, linked to the first.
        From the failed step: the steps that succeeded before it reuse their outputs
        (when the first run's workspace still has them) instead of running again.
        One retry at a time in a chain of retries: while the latest retry of the run, or
        of the run the chain began with, is queued or running, another is refused
        (Conflict naming it), so a double click, or two people retrying the same
        failure from two of its runs, queue one run. The run retried, and the chain's
        first run, record the retry (RunRetried) in the same append as the new run, so
        two racing retries cannot both pass the check: both append the first run, the
        loser's append conflicts, and its next attempt finds the winner's."""
        retry_id = new_id(ctx, "run")

        def queue_retry() -> tuple[Run, ...]:
            original = self.load(principal, run_id)
            if original.status not in RETRYABLE:
                raise Conflict(
                    f"run is {original.status}; only a finished, unsuccessful run can be retried"
                )
            first = self._first_of_chain(original)
            self._check_no_retry_running(original, first)
            resume_from = None
            if from_failed_step:
                failure = original.first_failure()
                if failure is None:
                    raise InvalidCommand(
                        "the run has no failed step to retry from", "from_failed_step"
                    )
                resume_from = failure[0]
            retry = Run.queue(
                run_id=retry_id,
                tenant_id=original.tenant_id,
                pipeline_id=original.pipeline_id,
                pipeline_name=original.pipeline_name,
                revision=original.revision,
                definition=original.definition,
                params=original.params,
                trigger=Trigger("retry", str(original.id)),
                retry_of=str(original.id),
                first_of_chain=str(first.id),
                resume_from=resume_from,
                ctx=ctx,
                max_attempts=self._max_attempts,
            )
            original.record_retry(retry_id, ctx)
            if first is original:
                return retry, original
            first.record_retry(retry_id, ctx)
            return retry, original, first

        return self._queue(principal, ctx, retry_id, queue_retry)

    def _first_of_chain(self, run: Run) -> Run:
        """The run a chain of retries began with: the one a retry names, else (a retry
        queued before runs named it) `retry_of` followed back, one read per run."""
        if run.first_of_chain is not None:
            first = self._store.find(Run, UUID(run.first_of_chain))
            if first is not None:
                return first
        for _ in range(MAX_RETRY_CHAIN):
            earlier = self._store.find(Run, UUID(run.retry_of)) if run.retry_of else None
            if earlier is None:
                break
            run = earlier
        return run

    def _check_no_retry_running(self, original: Run, first: Run) -> None:
        """Every retry in a chain is recorded on its first run (`queue_retry`), so that
        run's `retried_by` is the chain's latest retry; a retry of `original` is refused
        while that one goes on."""
        if first.retried_by is None:
            return
        latest = self._store.find(Run, UUID(first.retried_by))
        if latest is not None and not latest.finished:
            raise Conflict(
                f"run {original.id} is being retried already, as run {latest.id}"
                f" ({latest.status}): wait for that run to end, or cancel it"
            )

    def _queue(
        self,
        principal: Principal,
        ctx: CommandContext,
        run_id: UUID,
        new_run: Callable[[], Run | tuple[Run, ...]],
    ) -> Changed[Run]:
        """Save a new run with its take of the day's runs (and the runs a retry records
        itself on, when `new_run` returns them after it). A failed append saved nothing
        and took the events out of the aggregates: each attempt builds them again (same
        id).
        Asked with an Idempotency-Key, the run's id derives from it: a run an earlier
        attempt of the request queued is answered as that attempt answered it, and
        never queued twice (application/idempotency.py)."""
        earlier = earlier_result(self._store, Run, run_id, ctx)
        if earlier is not None:
            return earlier
        tenant = writable_tenant(self._store, principal)

        def attempt() -> Changed[Run]:
            made = new_run()
            run, *beside = made if isinstance(made, tuple) else (made,)
            try:
                with self.take_run_of_day(tenant, ctx) as usage:
                    return self._runs.save(run, *beside, usage)
            except VersionConflict:
                # Answered outside the ledger's block, so that its copy of the usage,
                # which counted this failed append, is not kept.
                first = first_result(self._store, Run, run_id, ctx)
                if first is None:
                    raise
                return first

        return retry_on_conflict(attempt)


def _check_params(params: dict[str, Any]) -> None:
    for problem in nul_errors(params, "params"):
        raise InvalidCommand(problem.message, problem.field)
    if len(msgspec.json.encode(params)) > MAX_PARAMS_BYTES:
        raise InvalidCommand(f"params must be at most {MAX_PARAMS_BYTES} bytes of JSON", "params")
