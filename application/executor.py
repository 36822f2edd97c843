"""The executor (a process manager): claims queued runs and executes them
(application/run_execution.py), stops them on a cancel, hands them back on shutdown.

Claiming is a RunStarted event appended with optimistic concurrency, so two executors
never run the same run; it is refused while the tenant runs max_concurrent_runs: the
claim takes from the tenant's running-runs Usage in its own append, and the append that
moves the run out of running (its end, a hand-back, a recovery) releases it (`save`). The
claim's append also carries the start of every step that can start at once (its
RunStepStarted events follow RunStarted, as they would in two appends), so an execution
begins with its first steps already recorded.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from application.conflicts import retry_on_conflict
from application.errors import VersionConflict
from application.event_store import NornEventStore
from application.ports import Heartbeats, StepRunner, Usage
from application.quotas import UsageLedger
from application.run_execution import ExecutorPolicy, RunExecution, context_of, start_ready
from domain.errors import InvalidCommand
from domain.run import Run, RunStatus
from domain.tenant import Tenant, TenantStatus

log = logging.getLogger(__name__)
T = TypeVar("T")
RECENT_CANCELS = 1_000


class TenantSuspended(Exception):
    """The run's tenant is suspended: its runs wait, queued, until it is reactivated."""


@dataclass(frozen=True)
class Claim:
    """A run claimed by this executor: the attempt it owns, the run as saved by the
    claim, and the steps the claim started."""

    run: Run
    attempt: int
    started: tuple[str, ...]


class RunExecutor:
    def __init__(
        self,
        store: NornEventStore,
        steps: StepRunner,
        heartbeats: Heartbeats,
        usage: Usage,
        executor_id: str,
        policy: ExecutorPolicy | None = None,
        jitter: Callable[[], float] = random.random,
        run_ended: Callable[[Run], object] | None = None,
    ) -> None:
        self.store = store
        self.steps = steps
        self.heartbeats = heartbeats
        self.usage = usage
        self.ledger = UsageLedger(store, usage)
        self.executor_id = executor_id
        self.policy = policy or ExecutorPolicy()
        self.jitter = jitter
        self._run_ended = run_ended
        """Told of every run of a deployment this executor (or recovery) ended, after its
        append: a verification's outcome reaches the deployment at once
        (application/deployment_verification.py; the deadline sweep is the backstop)."""
        self._executions: dict[str, RunExecution] = {}
        self._releasing = False
        self._cancels: OrderedDict[str, None] = OrderedDict()
        """Runs a cancel notice came for while not executing here (the latest
        RECENT_CANCELS): one claimed just before its cancel was requested begins after
        the notice, and is stopped as it begins (`began`)."""

    @property
    def running(self) -> list[str]:
        return list(self._executions)

    def claim(self, run_id: UUID) -> Claim | None:
        """Claim a queued run (synchronous: call it in a thread), starting in the same
        append the steps that can start at once. Returns the claim, or None when there
        is nothing to do (unknown, no longer queued, claimed by another executor,
        cancelled). QuotaExceeded when its tenant already runs max_concurrent_runs,
        TenantSuspended when the tenant is suspended: in both cases the run stays
        queued. A lost race is tried again on fresh state: it may have been the usage
        (another executor process claimed or ended a run of the tenant), not the run."""
        try:
            return retry_on_conflict(lambda: self._claim_once(run_id))
        except VersionConflict:
            return None  # the run kept changing: its item comes round again

    def _claim_once(self, run_id: UUID) -> Claim | None:
        run = self.store.find(Run, run_id)
        if run is None or run.status != RunStatus.QUEUED:
            return None
        ctx = context_of(run)
        tenant = self.store.find(Tenant, UUID(run.tenant_id))
        if tenant is None or tenant.status == TenantStatus.DELETED:
            run.request_cancel("its tenant was deleted", ctx)
            self.store.append(run)
            return None
        if tenant.status == TenantStatus.SUSPENDED:
            raise TenantSuspended(run.tenant_id)
        try:
            attempt = run.start(self.executor_id, ctx)
        except InvalidCommand:
            return None  # a cancel is on its way
        # A retry from a failed step first takes over the outputs it reuses (after the
        # claim: only the run's owner may touch its workspace), then starts.
        resumes = run.resume_from is not None and run.retry_of is not None
        started = () if resumes else tuple(start_ready(run, attempt, ctx))
        with self.ledger.take(tenant, "max_concurrent_runs", ctx) as usage:
            # The lease first: dying between the two leaves a lease recovery drops,
            # never a running attempt without one.
            self.heartbeats.lease(str(run.id), attempt, self.executor_id)
            self.store.append(run, usage)
        return Claim(run, attempt, started)

    def save(self, run: Run, was_running: bool) -> int | None:
        """Save a decision about a run (synchronous: call it in a thread). The append
        that takes the run out of running also gives back its unit of the tenant's
        max_concurrent_runs, so it is given back exactly once, however the run ends.
        VersionConflict when someone else saved first (the run or its usage)."""
        if not was_running or run.status == RunStatus.RUNNING:
            return self.store.append(run)
        with self.ledger.release(run.tenant_id, "max_concurrent_runs", context_of(run)) as usage:
            position = self.store.append(run, usage)
        if run.finished and run.trigger.kind == "deployment":
            self._tell_run_ended(run)
        return position

    def _tell_run_ended(self, run: Run) -> None:
        """Best effort: the run's end is saved; if telling fails (the database blinked,
        a concurrent command kept winning), the deadline sweep settles it later."""
        if self._run_ended is None:
            return
        try:
            self._run_ended(run)
        except Exception:
            log.warning("run %s ended; its deployment will learn it at the next sweep", run.id)

    def release_all(self) -> None:
        """Hand every run executing here back to the queue (shutting down), and any run
        whose execution begins from now on: one claimed just as the process began to
        stop would otherwise run on, unwatched, until it is recovered as lost."""
        self._releasing = True
        for execution in self._executions.values():
            execution.release()

    def began(self, run_id: str, execution: RunExecution) -> None:
        """An execution starts here; one that begins while shutting down is handed back
        at once, else it would run unwatched."""
        self._executions[run_id] = execution
        if self._releasing:
            execution.release()
        elif run_id in self._cancels:
            del self._cancels[run_id]
            execution.stop.set()  # its decision's append meets the request and honours it

    def ended(self, run_id: str) -> None:
        self._executions.pop(run_id, None)

    def cancel_requested(self, run_id: str) -> None:
        """A cancel request was published for the run: stop it now if it runs here,
        or as it begins if its claim is on its way (the claim read the run before the
        request, and the execution re-reads it only at its first heartbeat)."""
        execution = self._executions.get(run_id)
        if execution is not None:
            execution.stop.set()
            return
        self._cancels[run_id] = None
        self._cancels.move_to_end(run_id)
        while len(self._cancels) > RECENT_CANCELS:
            self._cancels.popitem(last=False)

    async def execute(self, claim: Claim) -> str:
        """Execute a claimed run until it ends; returns its final status, or "lost" when
        this executor no longer owns it."""
        return await RunExecution(self, claim.run, claim.attempt, claim.started).run()
