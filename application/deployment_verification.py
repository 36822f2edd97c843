"""How a blue-green release's verification ends: its run's outcome, or its deadline.

Both reach the Deployment as commands of the system, each decided on the deployment's own
events and appended with optimistic concurrency, so that whichever arrives first decides
and the other finds nothing verifying (a no-op). Both read the same facts: the release's
deadline (the release event's time plus the timeout, in the event store) and the run's
end (its status and the time of its end event). A run that ended by the deadline —
exactly at it included — decides the outcome, even if the deadline is noticed first; a run
still queued or running at the deadline fails the release. So a run finishing exactly at
its deadline yields exactly one outcome, the same whichever path records it.

The two paths (docs/architecture.md "Deployments"):

- *The run's end* (`run_ended`, `record_verification_outcome`): the executor that saves
  a deployment's run's end (a run that succeeded, failed, timed out or was cancelled
  while running, or that recovery crashed) tells it here right after that append
  (`RunExecutor(run_ended=...)`), best effort. A run ended elsewhere (a queued run
  cancelled through the API) or an end whose telling was lost (the executor died in
  between) is left to the sweep. Fast, but not what guarantees the outcome.
- *The sweep* (`sweep`): the executors' maintenance leader (one at a time, §9) asks, every
  pass, for the deployments whose verifying release is due (its deadline passed, or its run
  ended) and settles each from the write side. Only the candidates come from a read model
  (`VerifyingDeployments`); what happens is decided on the deployment's and the run's own
  events, so a stale candidate costs a no-op, and a missed one is found on the next pass.
  This is the durable timer: the deadline is in the event store, and whichever process
  holds maintenance after a restart finds it. A release therefore ends by its deadline
  plus one sweep interval (plus the read model's lag), whoever was killed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID, uuid4

from application.authorization import sees
from application.commands import Aggregates
from application.conflicts import retry_on_conflict
from application.errors import NotFound
from application.event_store import NornEventStore
from application.principal import system_principal
from application.results import Changed
from domain.deployment import Deployment
from domain.events import CommandContext
from domain.run import Run

SYSTEM = system_principal("deployments")


class VerifyingDeployments(Protocol):
    """Candidates for the sweep: deployments whose verifying release's deadline is at or
    before `now`, or whose verification run has ended (a read model's view)."""

    def due(self, now: datetime, limit: int) -> list[UUID]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class DeploymentVerification:
    def __init__(self, store: NornEventStore, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock
        self._deployments = Aggregates(
            store, Deployment, "deployment", scope=lambda p, d: sees(p, d.tenant_id)
        )

    def record_verification_outcome(
        self, run_id: UUID, ctx: CommandContext
    ) -> Changed[Deployment] | None:
        """A run ended: if it verifies a deployment's release, record its outcome (None:
        not a deployment's run, or not ended). Runs of `execute` and repeats record
        nothing."""
        run = self._store.find(Run, run_id)
        return None if run is None else self.run_ended(run, ctx)

    def run_ended(self, run: Run, ctx: CommandContext | None = None) -> Changed[Deployment] | None:
        """`record_verification_outcome` for a run at hand (the executor's, after the
        append that ended it); `ctx` defaults to the run's own chain."""
        if not run.finished or run.trigger.kind != "deployment":
            return None
        if run.trigger.id is None or run.trigger.release is None:
            return None
        release = run.trigger.release
        ctx = ctx or CommandContext(SYSTEM.actor, run.correlation_id, causation_id=str(run.id))

        def decide(deployment: Deployment) -> None:
            self._record(deployment, release, run, ctx)

        return self._change(UUID(run.trigger.id), decide, ctx)

    def settle(self, deployment_id: UUID, ctx: CommandContext) -> Changed[Deployment] | None:
        """Settle the verifying release from the facts: its run's outcome if the run has
        ended, else a failure if the deadline has passed; else nothing (not due)."""

        def decide(deployment: Deployment) -> list[Run] | None:
            verifying = deployment.verifying()
            if verifying is None or verifying.run_id is None:
                return None
            run = self._store.find(Run, UUID(verifying.run_id))
            if run is not None and run.finished:
                self._record(deployment, verifying.release, run, ctx)
                return None
            expired = deployment.expire_verification(verifying.release, self._clock(), ctx)
            if not expired or run is None:
                return None
            # Its outcome can no longer count: stop it (and free its executor slot) in
            # the same append. Should it end meanwhile, the append conflicts on the run
            # and this decides again on its outcome.
            run.request_cancel(
                f"release {verifying.release} of deployment {deployment.id} "
                "missed its verification deadline",
                ctx,
            )
            return [run]

        return self._change(deployment_id, decide, ctx)

    def sweep(
        self, candidates: VerifyingDeployments, ctx: CommandContext, limit: int = 100
    ) -> list[UUID]:
        """One pass of the durable timer: settle every due candidate. Returns those whose
        release ended now."""
        ended = []
        for deployment_id in candidates.due(self._clock(), limit):
            done = self.settle(deployment_id, ctx)
            if done is not None and done.changed:
                ended.append(deployment_id)
        return ended

    def sweep_pass(self, candidates: VerifyingDeployments, limit: int = 100) -> list[UUID]:
        """`sweep` as the maintenance loop runs it: each pass its own correlation id."""
        return self.sweep(candidates, CommandContext(SYSTEM.actor, f"sweep-{uuid4()}"), limit)

    def _record(self, deployment: Deployment, release: int, run: Run, ctx: CommandContext) -> None:
        assert run.finished_at is not None
        deployment.record_verification(
            release, str(run.id), run.status, run.finished_at, ctx, error=run.error
        )

    def _change(
        self, deployment_id: UUID, decide: Callable[[Deployment], None], ctx: CommandContext
    ) -> Changed[Deployment] | None:
        # A concurrent command on the deployment (a release, a retire, the other path)
        # makes the append conflict: decide again on what it saved.
        try:
            return retry_on_conflict(
                lambda: self._deployments.change(SYSTEM, deployment_id, decide, ctx=ctx)
            )
        except NotFound:
            return None  # a candidate or a trigger naming no deployment
