"""Supervised background loops: every long-running loop of Norn (the relay, the projection
runners, the executor's workers and maintenance, the rate-limit syncer, the connects that
wait for NATS) runs its steps through `supervise` or `retry` instead of its own
try/except/sleep (docs/architecture.md §9).

What they guarantee, in one place:

- An exception of a step is logged with the loop's name and the step is tried again
  after a pause; NATS or PostgreSQL being down only delays a loop, never ends it.
- The pause grows exponentially from `Backoff.first` up to `Backoff.cap`, and starts over
  once the loop has run `Backoff.healthy_after` seconds without failing: a loop that
  fails now and then retries quickly, one that keeps failing waits the cap.
- No log floods: a failure is logged in full (with its traceback, unless its type is one
  the loop expects, such as a lost connection) when it differs from the previous one of
  the streak, and a repeat of the same failure at most every REPEAT_LOG_EVERY seconds
  with the count of repeats in between (those go to DEBUG). Recovery is logged once.
- Cancellation ends the loop: CancelledError is never swallowed, even when a step turned
  it into another exception (the task is still being cancelled then).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

REPEAT_LOG_EVERY = 60.0
"""Seconds between two log lines of the same failure repeating in a streak."""


@dataclass(frozen=True)
class Backoff:
    """Pauses after failures: `first`, then `factor` times the previous, at most `cap`.
    A loop that has run `healthy_after` seconds since its last failure starts over."""

    first: float
    cap: float
    factor: float = 2.0
    healthy_after: float = 60.0

    def delay(self, failures: int) -> float:
        """The pause after the `failures`-th failure in a row (1 for the first)."""
        # The exponent is bounded so that a loop failing for weeks cannot overflow.
        return min(self.cap, self.first * self.factor ** min(max(failures - 1, 0), 64))


async def pause(stop: asyncio.Event, seconds: float, *wake: asyncio.Future[Any]) -> None:
    """Sleep, but wake at once when asked to stop or when any of `wake` completes."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, *wake}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


class _Streak:
    """The failures in a row of one loop: how long to pause, and what to log."""

    def __init__(
        self,
        name: str,
        backoff: Backoff,
        quiet: tuple[type[BaseException], ...],
        logger: logging.Logger,
        clock: Clock,
    ) -> None:
        self._name = name
        self._backoff = backoff
        self._quiet = quiet
        self._log = logger
        self._clock = clock
        self.failures = 0
        self._running_since = clock()  # when the step was last (re)started
        self._signature: tuple[Any, ...] | None = None
        self._logged_at = 0.0
        self._unlogged = 0  # repeats not logged since the last line
        self._recovery_due = False  # a failure was logged: say once when it is over

    def failed(self, error: Exception) -> float:
        """Count and log `error`; return the pause before the next attempt."""
        now = self._clock()
        if self.failures and now - self._running_since >= self._backoff.healthy_after:
            self._reset()  # healthy long enough since the last failure: a new streak
        self.failures += 1
        delay = self._backoff.delay(self.failures)
        signature = _signature(error)
        if signature == self._signature and now - self._logged_at < REPEAT_LOG_EVERY:
            self._unlogged += 1
            self._log.debug("%s failed again: %r", self._name, error)
            return delay
        quiet = isinstance(error, self._quiet)
        self._log.log(
            logging.WARNING if quiet else logging.ERROR,
            "%s failed%s%s; retrying in %.3gs",
            self._name,
            f": {error!r}" if quiet else "",
            self._count(),
            delay,
            exc_info=None if quiet else error,
        )
        self._signature, self._logged_at, self._unlogged = signature, now, 0
        self._recovery_due = True
        return delay

    def restarted(self) -> None:
        self._running_since = self._clock()

    def succeeded(self) -> None:
        if not self.failures:
            return
        if self._recovery_due:
            self._recovery_due = False
            self._log.info("%s recovered after %d failures", self._name, self.failures)
        if self._clock() - self._running_since >= self._backoff.healthy_after:
            self._reset()

    def _count(self) -> str:
        if self.failures == 1:
            return ""
        unlogged = f", {self._unlogged} not logged" if self._unlogged else ""
        return f" ({self.failures} in a row{unlogged})"

    def _reset(self) -> None:
        self.failures = 0
        self._signature = None
        self._unlogged = 0
        self._recovery_due = False


def _signature(error: BaseException) -> tuple[Any, ...]:
    """What makes two failures "the same": type, message and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    where = (frames[-1].filename, frames[-1].lineno) if frames else None
    return (type(error), str(error), where)


def _sleeper(stop: asyncio.Event | None) -> Sleep:
    return asyncio.sleep if stop is None else functools.partial(pause, stop)


def _still_cancelled(error: Exception) -> None:
    """A step that caught a cancellation and raised something else must not make the
    loop carry on: the task asked to stop is still being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error


async def supervise(
    name: str,
    step: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event | None = None,
    backoff: Backoff,
    quiet: tuple[type[BaseException], ...] = (),
    raises: tuple[type[BaseException], ...] = (),
    logger: logging.Logger | None = None,
    sleep: Sleep | None = None,
    clock: Clock = time.monotonic,
) -> None:
    """Run `step` again and again until `stop` is set (or forever, until cancelled).

    A step returns when it is done with one round (it does its own waiting between
    rounds); if it raises, the failure is logged under `name` and the step is run again
    after the backoff's pause (cut short by `stop`). `quiet`: exception types that are
    part of normal operation (a lost connection), logged as one line without traceback;
    `raises`: types the caller handles, raised at once. `sleep`/`clock` are for tests.
    """
    streak = _Streak(name, backoff, quiet, logger or log, clock)
    nap = sleep or _sleeper(stop)
    while stop is None or not stop.is_set():
        try:
            await step()
        except raises:
            raise
        except Exception as error:
            _still_cancelled(error)
            await nap(streak.failed(error))
            streak.restarted()
        else:
            streak.succeeded()


async def retry(
    name: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event | None = None,
    backoff: Backoff,
    quiet: tuple[type[BaseException], ...] = (),
    logger: logging.Logger | None = None,
    sleep: Sleep | None = None,
    clock: Clock = time.monotonic,
) -> T | None:
    """`attempt()`'s result, trying again after failures as `supervise` does; None if
    `stop` was set first."""
    streak = _Streak(name, backoff, quiet, logger or log, clock)
    nap = sleep or _sleeper(stop)
    while stop is None or not stop.is_set():
        try:
            result = await attempt()
        except Exception as error:
            _still_cancelled(error)
            await nap(streak.failed(error))
            streak.restarted()
        else:
            streak.succeeded()
            return result
    return None
