"""Run use cases: trigger a run of a pipeline (by id or by name), cancel it, retry it,
and wait for it to finish. Executing runs is the executor's (application/executor.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import msgspec

from application.authorization import require_tenant, require_writable_tenant
from application.errors import NotFound
from application.event_store import NornEventStore
from application.pipelines import PipelineService
from application.ports import Usage
from application.principal import Principal
from application.quotas import UsageLedger, retry_on_conflict
from application.tenants import writable_tenant
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.run import Run, Trigger
from domain.text import nul_errors

MAX_PARAMS_BYTES = 65_536
RETRYABLE = frozenset({"failed", "cancelled", "timed_out", "crashed"})


@dataclass(frozen=True)
class RunChanged:
    run: Run
    position: int | None


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

    def trigger(
        self,
        principal: Principal,
        pipeline_id: UUID,
        *,
        params: dict[str, Any],
        ctx: CommandContext,
        revision: int | None = None,
        trigger: Trigger | None = None,
    ) -> RunChanged:
        """Queue a run of the pipeline's latest revision (or of `revision`)."""
        pipeline = self._pipelines.load(principal, pipeline_id)
        number = pipeline.revision if revision is None else revision
        definition = self._pipelines.definition_at(pipeline, number)
        _check_params(params)
        run_id = uuid4()
        return self._queue(
            principal,
            ctx,
            lambda: Run.queue(
                run_id=run_id,
                tenant_id=pipeline.tenant_id,
                pipeline_id=str(pipeline.id),
                pipeline_name=definition.name,
                revision=number,
                definition=definition,
                params=params,
                trigger=trigger or Trigger(principal.kind, principal.subject_id),
                ctx=ctx,
                max_attempts=self._max_attempts,
            ),
        )

    def trigger_by_name(
        self, principal: Principal, name: str, *, params: dict[str, Any], ctx: CommandContext
    ) -> RunChanged:
        tenant_id = require_tenant(principal)
        claim = self._store.find(NameClaim, claim_id(f"pipeline:{tenant_id}", name))
        if claim is None or claim.holder_id is None:
            raise NotFound("pipeline", name)
        return self.trigger(principal, UUID(claim.holder_id), params=params, ctx=ctx)

    def load(self, principal: Principal, run_id: UUID) -> Run:
        run = self._store.load(Run, run_id, "run")
        if principal.tenant_id is not None and run.tenant_id != principal.tenant_id:
            raise NotFound("run", run_id)  # another tenant's run: never reveal it
        return run

    def cancel(self, principal: Principal, run_id: UUID, ctx: CommandContext) -> RunChanged:
        """A queued run is cancelled at once; a running one is asked to stop, and its
        executor stops it promptly (also inside a long step)."""
        require_writable_tenant(principal)
        run = self.load(principal, run_id)
        if not run.request_cancel(f"cancelled by {principal.actor}", ctx):
            return RunChanged(run, None)
        return RunChanged(run, self._store.append(run))

    def retry(
        self,
        principal: Principal,
        run_id: UUID,
        *,
        from_failed_step: bool,
        ctx: CommandContext,
    ) -> RunChanged:
        """A new run of the same revision, definition and params, linked to the first.
        From the failed step: the steps that succeeded before it reuse their outputs
        (when the first run's workspace still has them) instead of running again."""
        original = self.load(principal, run_id)
        if original.status not in RETRYABLE:
            raise InvalidCommand(
                f"run is {original.status}; only a finished, unsuccessful run can be retried"
            )
        resume_from = None
        if from_failed_step:
            failure = original.first_failure()
            if failure is None:
                raise InvalidCommand("the run has no failed step to retry from", "from_failed_step")
            resume_from = failure[0]
        run_id = uuid4()
        return self._queue(
            principal,
            ctx,
            lambda: Run.queue(
                run_id=run_id,
                tenant_id=original.tenant_id,
                pipeline_id=original.pipeline_id,
                pipeline_name=original.pipeline_name,
                revision=original.revision,
                definition=original.definition,
                params=original.params,
                trigger=Trigger("retry", str(original.id)),
                retry_of=str(original.id),
                resume_from=resume_from,
                ctx=ctx,
                max_attempts=self._max_attempts,
            ),
        )

    async def wait_finished(
        self,
        principal: Principal,
        run_id: UUID,
        timeout: float,  # noqa: ASYNC109 - on timeout the answer is the unfinished run
    ) -> Run:
        """The run once it has finished, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            run = await asyncio.to_thread(self.load, principal, run_id)
            remaining = deadline - time.monotonic()
            if run.finished or remaining <= 0:
                return run
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.25)

    def _queue(
        self, principal: Principal, ctx: CommandContext, new_run: Callable[[], Run]
    ) -> RunChanged:
        """Save a new run with its take of the day's runs. A failed append saved nothing
        and took the events out of the run: each attempt builds it again (same id)."""
        tenant = writable_tenant(self._store, principal)

        def attempt() -> RunChanged:
            run = new_run()
            with self._ledger.take(tenant, "max_runs_per_day", ctx) as usage:
                return RunChanged(run, self._store.append(run, usage))

        return retry_on_conflict(attempt)


def _check_params(params: dict[str, Any]) -> None:
    for problem in nul_errors(params, "params"):
        raise InvalidCommand(problem.message, problem.field)
    if len(msgspec.json.encode(params)) > MAX_PARAMS_BYTES:
        raise InvalidCommand(f"params must be at most {MAX_PARAMS_BYTES} bytes of JSON", "params")
