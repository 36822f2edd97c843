"""The scheduler role (`norn scheduler`, also inside `norn serve`): fires scheduled jobs.

Any number of schedulers run at once, with no configuration and no leader: each pass
locks the due jobs' bookkeeping rows (job_schedules, migration 0013) with FOR UPDATE
SKIP LOCKED, so two schedulers never plan the same job at the same time, and a job's
run for a scheduled time has an id derived from both, so even a scheduler that died
between its append and its commit cannot make a second one (application/job_firing.py).
A killed scheduler's locks go with its connection; the next pass of another finds the
job where the dead one left it.

A pass: (1) rows for new jobs, starting at their creation time; (2) a job whose version
changed (update, enable, disable, delete) gets its next due time afresh from its cursor,
so re-enabling it makes what it missed due at once, and the misfire policy decides;
(3) the due jobs of active tenants, at most `batch` of them, planned and fired, their
bookkeeping updated in the same transaction that held them. A suspended tenant's jobs
are left alone: their missed times meet the misfire policy on reactivation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from application.fire_plan import FireState, next_due
from application.fires import DueJob, Outcome, Prepared, counts
from application.job_firing import JobFiring
from application.schedule import schedule_of
from application.threads import in_thread
from infrastructure import scheduler_queries as q
from infrastructure.supervision import Backoff, pause, supervise
from projections.job_queries import job_spec

log = logging.getLogger(__name__)

LOOK_EVERY = 5.0
"""Seconds between looks for new and changed jobs even while the jobs read model stays
put: a look another scheduler began and never finished (it died holding the rows) is
taken up by then."""

AHEAD_BATCHES = 20
"""At most this many batches are planned ahead of their time by one scheduler."""

DUE_MARGIN = 0.001
"""Seconds slept past a due time, so that the pass that wakes then finds the job due."""

GONE_EVERY = 5.0
"""Seconds between looks for jobs whose target is gone: a job is disabled about this long
after its pipeline is deleted or its deployment retired, not at its next fire."""


def fire_state(row: dict[str, Any]) -> FireState:
    """A job's bookkeeping, as a row of scheduler_queries' DUE, WAITING or CHANGED holds it."""
    return FireState(row["cursor"], row["waiting_for"], row["caught_up"], row["active_since"])


class SchedulerRole:
    def __init__(
        self,
        database_url: str,
        firing: JobFiring,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        interval: float = 0.25,
        batch: int = 500,
        lead: float = 0.0,
        sleep: Callable[[float], bool] | None = None,
        observe: Callable[[list[Outcome]], None] | None = None,
    ) -> None:
        self._database_url = database_url
        self._firing = firing
        self._clock = clock
        self._interval = interval
        self._batch = batch
        self._lead = lead
        """Seconds before a due time that its jobs are planned (run_ahead); 0: at it."""
        self._stopping = threading.Event()
        self._sleep = sleep or (lambda seconds: not self._stopping.wait(seconds))
        """Waits for a due time; False when the role stops meanwhile."""
        self._observe = observe
        self._gone_at = 0.0
        self._planned_at = 0.0
        self._fired_full = False  # the last pass fired a full batch
        self._replanned_full = False  # and the last look replanned a full batch
        self._looked_at: int | None = None
        """The jobs read model's position before the last look that left nothing behind
        (None: look next time). Idle, a pass then skips the look, which scans every job's
        row twice, four times a second."""
        self._looked_since = 0.0
        self._ahead_at: datetime | None = None
        """The due time run_ahead last took up: next_wake does not answer it again."""

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until stopped; an outage of PostgreSQL ends the connection,
        and the role reconnects with backoff, then plans what it missed."""
        watch = asyncio.create_task(self._watch(stop))
        try:
            await supervise(
                "scheduler",
                lambda: self._serve(stop),
                stop=stop,
                backoff=Backoff(first=0.5, cap=5.0),
                quiet=(psycopg.OperationalError,),  # an outage: one line, then reconnect
                logger=log,
            )
        finally:
            watch.cancel()

    async def _watch(self, stop: asyncio.Event) -> None:
        """Ends run_ahead's wait (in a thread) as soon as the role is stopped."""
        await stop.wait()
        self._stopping.set()

    async def _serve(self, stop: asyncio.Event) -> None:
        conn = await in_thread(
            psycopg.connect, self._database_url, row_factory=dict_row, autocommit=True
        )
        try:
            log.info("scheduler: active")
            while not stop.is_set():
                started = time.monotonic()
                busy = await in_thread(self.run_pass, conn)
                if not busy:
                    rest = max(0.0, self._interval - (time.monotonic() - started))
                    wait, ahead = await in_thread(self.next_wake, conn, rest)
                    await pause(stop, wait)
                    if ahead is not None and not stop.is_set():
                        await in_thread(self.run_ahead, conn, ahead)
        finally:
            await in_thread(conn.close)

    def run_pass(self, conn: psycopg.Connection[Any], before: datetime | None = None) -> bool:
        """One pass (blocking: run it in a thread) on an autocommit connection, each step
        its own transaction. True when it was full, so that the next starts at once.
        `before`: only jobs due before it (run_ahead's passes: the jobs due at its time
        are its own, held in the same transaction, where SKIP LOCKED does not skip them;
        a pass begun just before that time would fire them too, counted twice)."""
        replanned = 0
        # In a burst (full batches fired back to back) new and changed jobs are looked for
        # once an interval, not before every batch: each look scans every job's row.
        burst = self._fired_full and not self._replanned_full
        if not burst or time.monotonic() - self._planned_at >= self._interval:
            self._planned_at = time.monotonic()
            replanned = self._look(conn)
            self._replanned_full = replanned >= self._batch
        with conn.transaction():
            due_by = self._clock()
            if before is not None:
                due_by = min(due_by, before - timedelta(microseconds=1))
            rows = conn.execute(q.DUE, (due_by, self._batch)).fetchall()
            # Only due rows make a pass full (so that the next starts at once): a waiting
            # fire mostly has nothing to do yet, and passes that counted it would follow
            # each other without end while its run goes on.
            full = len(rows) >= self._batch
            if not full:
                rows += conn.execute(q.WAITING, (self._batch - len(rows),)).fetchall()
            if rows:
                self._fire(conn, rows)
        self._fired_full = full
        if time.monotonic() - self._gone_at > GONE_EVERY:
            self._gone_at = time.monotonic()
            gone = [row["id"] for row in conn.execute(q.GONE).fetchall()]
            if gone:
                self._firing.settle_gone(gone)
        return full or replanned >= self._batch

    def _look(self, conn: psycopg.Connection[Any]) -> int:
        """New jobs get their bookkeeping row and changed ones are planned again, unless
        the jobs read model has not moved since a look that left nothing behind. Answers
        how many were planned again."""
        row = conn.execute(q.JOBS_AT).fetchone()
        jobs_at = row["position"] if row else None
        now = time.monotonic()
        if jobs_at is not None and jobs_at == self._looked_at:
            if now - self._looked_since < LOOK_EVERY:
                return 0
        with conn.transaction():
            conn.execute(q.NEW)
            replanned = self._replan(conn)
        # Read before the look: a change committed since has moved the position past it.
        self._looked_at = jobs_at if replanned < self._batch else None
        self._looked_since = now
        return replanned

    def next_wake(
        self, conn: psycopg.Connection[Any], at_most: float
    ) -> tuple[float, datetime | None]:
        """Seconds to wait before the next pass: `at_most` (the rest of the interval), or
        less when a job falls due sooner, so that its pass starts at its due time rather
        than up to an interval later (half an interval late on average). With a lead,
        a due time within it is answered too: the pass after the wait is run_ahead's,
        `lead` seconds before that time."""
        now = self._clock()
        row = conn.execute(q.NEXT_DUE, (now,)).fetchone()
        if row is None or row["due"] is None:
            return at_most, None
        until = (row["due"] - now).total_seconds()
        ahead = self._lead > 0 and row["due"] != self._ahead_at
        if ahead and until - self._lead <= at_most:
            return max(0.0, until - self._lead), row["due"]
        return min(at_most, until + DUE_MARGIN), None

    def run_ahead(self, conn: psycopg.Connection[Any], at: datetime) -> None:
        """The jobs due at `at`, planned and their runs built before it, batch by batch
        while there is time (the other schedulers take the batches this one leaves),
        then queued when it comes: what is left at a burst's time is the appends. One
        transaction holds the jobs' rows throughout; a job whose definition changed
        meanwhile is not fired (the next look plans it again), and JobFiring.queue reads
        the targets again. What this leaves due, the passes after it fire."""
        self._ahead_at = at  # once: another scheduler may hold them all (next_wake)
        with conn.transaction():
            held: list[Prepared] = []
            versions: dict[UUID, int] = {}
            took = 0.0  # how long the last batch took to plan
            while len(held) < AHEAD_BATCHES:
                began = self._clock()
                if began + timedelta(seconds=took) >= at:
                    break  # another batch would delay those held
                rows = conn.execute(q.DUE_AT, (at, list(versions), self._batch)).fetchall()
                if not rows:
                    break
                versions.update((row["id"], row["version"]) for row in rows)
                held.append(self._firing.prepare(self._due_jobs(rows), at))
                took = (self._clock() - began).total_seconds()
                if len(rows) < self._batch:
                    break
            if not held:
                return
            log.debug(
                "scheduler: %d jobs due at %s planned %.3f s before it",
                len(versions),
                at.isoformat(),
                (at - self._clock()).total_seconds(),
            )
            if not self._wait_for(conn, at):
                return  # stopping: nothing queued, the rows go back as they were
            changed = conn.execute(q.CHANGED_SINCE, (list(versions), list(versions.values())))
            dropped = {row["id"] for row in changed.fetchall()}
            # The appends back to back; the bookkeeping of them all after the last (it is
            # committed with the transaction either way).
            outcomes = [o for prepared in held for o in self._firing.queue(prepared, dropped)]
            self._save(conn, outcomes)

    def _wait_for(self, conn: psycopg.Connection[Any], at: datetime) -> bool:
        """Until `at`, the passes go on (as savepoints of run_ahead's transaction): what
        falls due meanwhile (a new job, a fire waiting for its previous run) is fired at
        its time, not after the burst. The held jobs are not due before `at`, so no pass
        takes them. False when the role stops meanwhile."""
        while (left := (at - self._clock()).total_seconds()) > 0:
            if not self._sleep(min(left, self._interval)):
                return False
            if self._clock() < at:
                self.run_pass(conn, before=at)
        return True

    def _replan(self, conn: psycopg.Connection[Any]) -> int:
        rows = conn.execute(q.CHANGED, (self._batch,)).fetchall()
        planned = []
        for row in rows:
            due = None
            if row["enabled"] and not row["deleted"]:
                spec = job_spec(row)
                schedule = schedule_of(spec)
                state = fire_state(row)
                due = next_due(schedule, schedule.jitter(str(row["id"])), state)
            planned.append((row["version"], due, row["id"]))
        with conn.cursor() as cur:  # one round trip for them all (pipeline mode)
            cur.executemany(
                "UPDATE job_schedules SET spec_version = %s, next_due = %s, updated_at = now()"
                " WHERE job_id = %s",
                planned,
            )
        return len(rows)

    def _fire(self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
        self._save(conn, self._firing.fire(self._due_jobs(rows)))

    @staticmethod
    def _due_jobs(rows: list[dict[str, Any]]) -> list[DueJob]:
        return [
            DueJob(
                job_id=row["id"],
                tenant_id=row["tenant_id"],
                version=row["version"],
                spec=job_spec(row),
                state=fire_state(row),
                last_run_id=str(row["last_run_id"]) if row["last_run_id"] else None,
            )
            for row in rows
        ]

    def _save(self, conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> None:
        """Store the jobs' bookkeeping after their fires (in the transaction holding
        their rows), and count them."""
        if not outcomes:
            return
        now = self._clock()
        saved = [self._saved(outcome, now) for outcome in outcomes]
        conn.execute(q.SAVE, [list(column) for column in zip(*saved, strict=True)])
        totals = counts(outcomes)
        if any(totals.values()):
            log.debug("scheduler pass: %d jobs, %s", len(outcomes), totals)
        if self._observe is not None:
            self._observe(outcomes)

    def _saved(self, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
        """The bookkeeping row of one job after the pass (a row of q.SAVE's columns)."""
        job, state = outcome.job, outcome.state
        if outcome.disabled is not None:
            due = None  # its JobDisabled changes the version: it is planned afresh then
        elif outcome.more:
            due = now  # the scan stopped at its limit: go on at the next pass
        else:
            due = next_due(schedule_of(job.spec), outcome.jitter, state)
        return (
            state.cursor,
            state.waiting_for,
            state.caught_up,
            due,
            UUID(outcome.last_run_id) if outcome.last_run_id else None,
            outcome.last_run,
            outcome.fired,
            outcome.skipped,
            outcome.missed,
            outcome.refused,
            outcome.late,
            job.job_id,
        )
