"""One execution of a claimed run (application/executor.py claims it).

One task owns the run's aggregate: steps run in dependency order, independent branches
concurrently (one asyncio task each); each decision (steps finished, steps started, the
run finished) is one append, every state change in it still its own event. The claim's
append already started the first steps (application/executor.py), so a one-step run
takes three appends: queued; started with its step; the step's outcome with the run's.
A cancel request appended by someone else makes a decision's append conflict; the run
is reloaded, the decision applied again, and the cancel honoured. A cancel notice from
NATS stops the execution at once (`RunExecutor.cancel_requested`), also one that came
between its claim and its start. While it runs, the execution beats a heartbeat and
re-reads the run every heartbeat interval, so a cancel is seen even without NATS, and
an execution that lost its claim (recovered elsewhere after missed heartbeats) stops.
The first beat comes after one interval, not at the start: the claim's lease is its
first beat and the claim has just read the run, and a one-step run is usually over
before then (two statements fewer per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from application.errors import StepFailed, VersionConflict
from application.ports import StepCall, StepOutcome
from application.threads import in_thread
from domain.events import CommandContext
from domain.pipeline import StepSpec
from domain.run import ExecutionLost, Run, RunStatus, RunStepRetrying, StepStatus

if TYPE_CHECKING:
    from application.executor import RunExecutor

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTOR = "system:executor"
Failure = tuple[str, float | None]
"""A failed attempt: its error, and seconds until the next attempt (None: no more)."""


@dataclass(frozen=True)
class ExecutorPolicy:
    heartbeat_interval: float = 5.0
    """Seconds between heartbeats; each also re-reads the run (cancel, lost claim)."""


def backoff(step: StepSpec, failed_attempts: int, jitter: Callable[[], float]) -> float:
    """Seconds before the next attempt: retry_delay doubling per failed attempt, capped
    at max_delay, with "equal jitter" (half fixed, half random) so that many runs
    failing together do not retry in lockstep."""
    delay = min(step.max_delay, step.retry_delay * 2 ** (failed_attempts - 1))
    return delay / 2 + delay / 2 * jitter()


def context_of(run: Run) -> CommandContext:
    return CommandContext(ACTOR, run.correlation_id, causation_id=str(run.id))


def start_ready(run: Run, attempt: int, ctx: CommandContext) -> list[str]:
    """Start every step that may start now; returns them."""
    started = run.ready_steps()
    for step in started:
        run.start_step(step, attempt, ctx)
    return started


class RunExecution:
    """One attempt at one run, from claimed to a terminal status."""

    def __init__(
        self, executor: RunExecutor, run: Run, attempt: int, started: tuple[str, ...] = ()
    ) -> None:
        """`run` as the claim saved it; `started`: the steps the claim started."""
        self.x = executor
        self.run_id: UUID = run.id
        self.attempt = attempt
        self.run_: Run | None = run
        self.started = started
        self.stop = asyncio.Event()
        self.lost = False
        self.releasing = False
        self.tasks: dict[asyncio.Task[Any], str] = {}
        self.timers: dict[asyncio.Task[Any], str] = {}

    @property
    def current(self) -> Run:
        assert self.run_ is not None
        return self.run_

    def release(self) -> None:
        self.releasing = True
        self.stop.set()

    async def run(self) -> str:
        key = str(self.run_id)
        self.x.began(key, self)
        beating = asyncio.create_task(self._heartbeat())
        try:
            await self._loop(await self._reuse_previous_outputs())
            return self.current.status
        except ExecutionLost as lost:
            log.warning("run %s: %s; stopping here", key, lost)
            return "lost"
        finally:
            beating.cancel()
            await self._stop_steps()
            with contextlib.suppress(BaseException):
                await beating
            self.x.ended(key)
            with contextlib.suppress(Exception):
                await self.x.heartbeats.stop(key, self.attempt)
            if self.run_ is not None and self.run_.finished:
                succeeded = self.run_.status == RunStatus.SUCCEEDED
                with contextlib.suppress(Exception):
                    await self.x.steps.finished(key, self.run_.tenant_id, succeeded)

    async def _loop(self, reused: list[tuple[str, StepOutcome]]) -> None:
        """`reused`: outputs taken over from the run this one retries, recorded with the
        first decision."""
        timeout = self.current.definition.timeout
        deadline = time.monotonic() + timeout if timeout else None
        outcomes: list[tuple[str, StepOutcome | Failure]] = []
        retries_due: list[str] = []
        started: list[str] = list(self.started)
        decided = bool(started)  # the claim's append was this first decision
        while True:
            if not decided:
                started = await self._record(
                    lambda run, done=outcomes, due=retries_due, taken=reused: self._decide(
                        run, done, due, taken
                    )
                )
                outcomes, retries_due, reused = [], [], []
            decided = False
            if self.current.finished:
                return
            if not self.stop.is_set():  # a cancel known already: start nothing more
                for step in started:
                    self._spawn(step)
            stopping = asyncio.ensure_future(self.stop.wait())
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                done, _ = await asyncio.wait(
                    {*self.tasks, *self.timers, stopping},
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stopping.cancel()
            if self.stop.is_set():
                await self._stop_steps()
                if self.lost:
                    raise ExecutionLost(f"run {self.run_id} was taken over or ended elsewhere")
                if self.releasing:
                    await self._record(self._release)
                else:
                    await self._record(lambda run: run.cancelled(self.attempt, context_of(run)))
                return
            if deadline is not None and time.monotonic() >= deadline:
                await self._stop_steps()
                assert timeout is not None
                await self._record(
                    lambda run: run.timed_out(self.attempt, timeout, context_of(run))
                )
                return
            for task in done:
                if task in self.timers:
                    retries_due.append(self.timers.pop(task))
                elif task in self.tasks:
                    step = self.tasks.pop(task)
                    outcomes.append((step, self._outcome(step, task)))

    def _release(self, run: Run) -> None:
        run.release(self.attempt, f"executor {self.x.executor_id} shut down", context_of(run))

    def _decide(
        self,
        run: Run,
        outcomes: list[tuple[str, StepOutcome | Failure]],
        retries_due: list[str],
        reused: list[tuple[str, StepOutcome]],
    ) -> list[str]:
        """Apply reused outputs and finished attempts, start what may start, finish the
        run when all steps have; returns the steps started. Pure on the aggregate:
        applied again to a fresh copy when the append conflicts."""
        ctx = context_of(run)
        for step, outcome in reused:
            run.step_succeeded(
                step, self.attempt, outcome.records_in, outcome.records_out, ctx, reused=True
            )
        for step, outcome in outcomes:
            if isinstance(outcome, StepOutcome):
                run.step_succeeded(step, self.attempt, outcome.records_in, outcome.records_out, ctx)
            else:
                error, retry_in = outcome
                run.step_failed(step, self.attempt, error, retry_in, ctx)
        for step in retries_due:
            run.start_step(step, self.attempt, ctx)
        started = [*retries_due, *start_ready(run, self.attempt, ctx)]
        if not started and run.all_steps_finished():
            run.finish(self.attempt, ctx)
        return started

    def _outcome(
        self, step: str, task: asyncio.Task[Any]
    ) -> StepOutcome | tuple[str, float | None]:
        """What a finished attempt means: its outcome, or (error, seconds until the next
        attempt, None when there is none)."""
        spec = next(s for s in self.current.definition.steps if s.name == step)
        try:
            return task.result()
        except StepFailed as failure:
            error, retryable = str(failure), failure.retryable
        except TimeoutError:
            error, retryable = f"step timed out after {spec.timeout:g}s", True
        except Exception as unexpected:
            log.exception("run %s step %s: unexpected error", self.run_id, step)
            error, retryable = f"internal error: {type(unexpected).__name__}: {unexpected}", False
        attempts = self.current.steps[step].attempts
        if retryable and attempts <= spec.retries:
            return error, round(backoff(spec, attempts, self.x.jitter), 3)
        return error, None

    def _spawn(self, step: str) -> None:
        spec = next(s for s in self.current.definition.steps if s.name == step)
        state = self.current.steps[step]
        call = StepCall(
            run_id=str(self.run_id),
            tenant_id=self.current.tenant_id,
            run_attempt=self.attempt,
            step=spec,
            step_attempt=state.attempts,
            params=self.current.params,
            namespace=self.current.definition.namespace,
        )
        work = self.x.steps.run(call, self.stop)
        if spec.timeout is not None:
            work = asyncio.wait_for(work, spec.timeout)
        self.tasks[asyncio.create_task(work, name=f"run {self.run_id} step {step}")] = step

    async def _record(self, decide: Callable[[Run], T]) -> T:
        """Apply `decide` to the run and save it. When someone else appended first (a
        cancel request), reload and decide again on the fresh state."""
        for _ in range(10):
            was_running = self.current.status == RunStatus.RUNNING
            result = decide(self.current)
            # Retries wait only once their RunStepRetrying is saved.
            delays = {
                e.step: e.retry_in
                for e in self.current.pending_events
                if isinstance(e, RunStepRetrying)
            }
            try:
                await in_thread(self.x.save, self.current, was_running)
            except VersionConflict:
                self.run_ = await in_thread(self.x.store.load, Run, self.run_id, "run")
                if self.current.cancel_requested:
                    self.stop.set()
                continue
            for step, delay in delays.items():
                self.timers[asyncio.create_task(asyncio.sleep(delay))] = step
            return result
        raise RuntimeError(f"run {self.run_id}: could not record a decision in 10 tries")

    async def _reuse_previous_outputs(self) -> list[tuple[str, StepOutcome]]:
        """A retry from a failed step: steps of the previous run that succeeded and do
        not depend on the failed one take over their outputs instead of running (they
        are recorded with the first decision)."""
        run = self.current
        if run.resume_from is None or run.retry_of is None:
            return []
        previous = await in_thread(self.x.store.find, Run, UUID(run.retry_of))
        if previous is None:
            return []
        redo = {run.resume_from, *run._downstream_of(run.resume_from)}
        reused: list[tuple[str, StepOutcome]] = []
        for spec in run.definition.steps:
            if spec.name in redo or previous.steps[spec.name].status != StepStatus.SUCCEEDED:
                continue
            outcome = await self.x.steps.reuse(
                str(self.run_id), run.tenant_id, run.retry_of, spec.name
            )
            if outcome is not None:
                reused.append((spec.name, outcome))
        return reused

    async def _heartbeat(self) -> None:
        # The first beat waits an interval: the claim has just leased the run (the lease
        # is its first beat) and read it; a cancel requested since comes as a notice
        # (RunExecutor.cancel_requested) or, without NATS, at this re-read.
        key = str(self.run_id)
        while True:
            await asyncio.sleep(self.x.policy.heartbeat_interval)
            try:
                await self.x.heartbeats.beat(key, self.attempt, self.x.executor_id)
                latest = await in_thread(self.x.store.find, Run, self.run_id)
                if latest is not None:
                    if latest.status != RunStatus.RUNNING or latest.attempt != self.attempt:
                        self.lost = True
                        self.stop.set()
                    elif latest.cancel_requested:
                        self.stop.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A missed beat is survivable; many in a row get the run recovered.
                log.warning("run %s: heartbeat failed: %r", key, error)

    async def _stop_steps(self) -> None:
        pending = [*self.tasks, *self.timers]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        self.tasks.clear()
        self.timers.clear()
