"""Recovery of runs whose executor vanished (a process manager): nothing stays running
forever. A running run whose executor's lease (its heartbeat, taken before the claim was
saved) is older than the timeout is queued again for another executor while it has
attempts left (Run.max_attempts), else marked crashed. No read model is involved.

The executor that lost it, if it is merely slow rather than dead, finds its next command
refused (ExecutionLost: its attempt is no longer the run's) and stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

from application.errors import VersionConflict
from application.event_store import NornEventStore
from application.ports import Heartbeats
from application.threads import in_thread
from domain.events import CommandContext
from domain.run import Run, RunStatus

log = logging.getLogger(__name__)

MOVED_ON = "moved_on"
"""_recover's answer for a lease whose attempt is not running (nothing to recover)."""


class RunRecovery:
    def __init__(
        self,
        store: NornEventStore,
        heartbeats: Heartbeats,
        timeout: float,
        save: Callable[[Run, bool], int | None],
        batch: int = 100,
    ) -> None:
        """`save`: RunExecutor.save, which gives back the recovered attempt's unit of
        its tenant's max_concurrent_runs in the same append."""
        self._store = store
        self._save = save
        self._heartbeats = heartbeats
        self._timeout = timeout
        self._batch = batch

    async def sweep(self) -> list[tuple[str, str]]:
        """Recover every lost run once; returns (run id, its new status) of each. Reads
        only the executors' leases (Heartbeats) and each run's own events."""
        recovered = []
        for run_id, attempt in await self._heartbeats.stale(self._timeout, self._batch):
            status = await in_thread(self._recover, run_id, attempt)
            if status is None:
                continue  # the executor saved something after all: look again later
            # The lease goes either way: a recovered attempt has no executor left to
            # remove it, and one that had moved on was a lost claim or a finished run.
            await self._heartbeats.drop_stale(run_id, attempt, self._timeout)
            if status == MOVED_ON:
                continue
            log.warning(
                "run %s: no heartbeat from its executor for %.0fs (attempt %d): %s",
                run_id,
                self._timeout,
                attempt,
                status,
            )
            recovered.append((run_id, status))
        return recovered

    def _recover(self, run_id: str, attempt: int) -> str | None:
        run = self._store.find(Run, UUID(run_id))
        if run is None or run.status != RunStatus.RUNNING or run.attempt != attempt:
            # A claim that lost its race or died before it was saved, a run that ended
            # before its executor could remove its lease, or an attempt taken over.
            return MOVED_ON
        ctx = CommandContext("system:recovery", run.correlation_id, causation_id=run_id)
        status = run.recover(attempt, f"executor {run.executor_id} stopped heart-beating", ctx)
        try:
            self._save(run, True)
        except VersionConflict:
            return None  # the executor recorded something after all; look again later
        return status
