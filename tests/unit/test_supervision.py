"""The supervised-loop helper: backoff, recovery, logging without floods, and that a
cancellation always ends the loop. A fake clock and sleep make these run in
milliseconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import pytest

from infrastructure.supervision import REPEAT_LOG_EVERY, Backoff, pause, retry, supervise

BACKOFF = Backoff(first=1.0, cap=8.0, healthy_after=60.0)
NAME = "test loop"


class FakeTime:
    """A clock that only moves when the loop sleeps (or a step says it took a while)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


Outcome = Exception | float | None


def scripted(
    outcomes: Iterable[Outcome], stop: asyncio.Event, time: FakeTime
) -> Callable[[], Awaitable[None]]:
    """A step that plays `outcomes` in order: an exception is raised, a number is the
    seconds the step takes, None a quick success; `stop` is set when they run out."""
    remaining = list(outcomes)

    async def step() -> None:
        if not remaining:
            stop.set()
            return
        outcome = remaining.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is not None:
            time.now += outcome

    return step


async def run(
    outcomes: Iterable[Outcome],
    *,
    quiet: tuple[type[BaseException], ...] = (),
    raises: tuple[type[BaseException], ...] = (),
    logger: logging.Logger | None = None,
) -> tuple[FakeTime, asyncio.Event]:
    time, stop = FakeTime(), asyncio.Event()
    await supervise(
        NAME,
        scripted(outcomes, stop, time),
        stop=stop,
        backoff=BACKOFF,
        quiet=quiet,
        raises=raises,
        logger=logger,
        sleep=time.sleep,
        clock=time.clock,
    )
    return time, stop


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """What the helper logged at `level` or above."""
    return [
        r for r in caplog.records if r.name == "infrastructure.supervision" and r.levelno >= level
    ]


def failures(n: int, message: str = "boom") -> list[Outcome]:
    return [RuntimeError(message) for _ in range(n)]


def test_the_pause_doubles_up_to_the_cap() -> None:
    assert [BACKOFF.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert BACKOFF.delay(10**9) == 8.0  # no overflow after weeks of failures


async def test_failures_back_off_exponentially_and_the_loop_recovers() -> None:
    time, stop = await run([*failures(5), None, None])
    assert time.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert stop.is_set()  # it went on after the failures, through every outcome


async def test_the_backoff_starts_over_after_a_healthy_period() -> None:
    # Two failures; then a step that runs longer than healthy_after; then failures again.
    time, _ = await run([*failures(2), None, 61.0, *failures(2)])
    assert time.sleeps == [1.0, 2.0, 1.0, 2.0]


async def test_failures_between_short_successes_keep_backing_off() -> None:
    """A loop that flaps (fails, works briefly, fails) is not healthy: the pause grows."""
    time, _ = await run([RuntimeError("a"), None, RuntimeError("a"), None, RuntimeError("a")])
    assert time.sleeps == [1.0, 2.0, 4.0]


async def test_an_unexpected_failure_is_logged_with_its_traceback_and_the_loop_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="infrastructure.supervision"):
        await run([ValueError("bad value")])
    [record] = records(caplog, logging.WARNING)
    assert record.levelno == logging.ERROR
    assert NAME in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_an_expected_failure_is_one_line_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="infrastructure.supervision"):
        await run([ConnectionError("refused")], quiet=(OSError,))
    [record] = records(caplog, logging.WARNING)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert NAME in record.getMessage() and "refused" in record.getMessage()


async def test_a_repeating_failure_is_logged_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 8 s between attempts at the cap: about 8 attempts per REPEAT_LOG_EVERY.
    count = int(REPEAT_LOG_EVERY // 8) + 6
    with caplog.at_level(logging.DEBUG, logger="infrastructure.supervision"):
        await run(failures(count))
    logged = records(caplog, logging.WARNING)
    assert len(logged) == 2  # the first, then one a minute later
    assert "not logged" in logged[1].getMessage()
    assert all(r.exc_info is not None for r in logged)  # each with its traceback
    debug = [r for r in records(caplog, logging.DEBUG) if r.levelno == logging.DEBUG]
    assert len(debug) == count - 2  # nothing is dropped silently


async def test_a_different_failure_is_logged_in_full_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="infrastructure.supervision"):
        await run([*failures(3, "one"), *failures(3, "two")])
    logged = [str(r.exc_info[1]) for r in records(caplog, logging.WARNING) if r.exc_info]
    assert logged == ["one", "two"]


async def test_recovery_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="infrastructure.supervision"):
        await run([*failures(3), None, None, None])
    recovered = [
        r.getMessage() for r in records(caplog, logging.INFO) if "recovered" in r.getMessage()
    ]
    assert recovered == [f"{NAME} recovered after 3 failures"]


async def test_the_callers_logger_is_used(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="norn.elsewhere"):
        await run(failures(1), logger=logging.getLogger("norn.elsewhere"))
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["norn.elsewhere"]


async def test_exceptions_the_caller_handles_are_raised_at_once() -> None:
    class Lost(Exception):
        pass

    with pytest.raises(Lost):
        await run([*failures(1), Lost()], raises=(Lost,))


async def test_cancelling_the_loop_ends_it_during_a_step_or_a_pause() -> None:
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        started.set()
        raise RuntimeError("boom")

    for step in (hangs, fails):
        started.clear()
        task = asyncio.create_task(supervise(NAME, step, backoff=BACKOFF, logger=_SILENT))
        await started.wait()
        await asyncio.sleep(0)  # `fails`: now in the (real, 1 s) pause
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)


async def test_a_step_that_turns_a_cancellation_into_an_error_cannot_keep_the_loop_going() -> None:
    entered = asyncio.Event()
    calls = 0

    async def swallows() -> None:
        nonlocal calls
        calls += 1
        try:
            entered.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(supervise(NAME, swallows, backoff=BACKOFF, logger=_SILENT))
    await entered.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert done, "the loop went on after it was cancelled"
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_stop_ends_the_loop_and_cuts_the_pause_short() -> None:
    stop = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(
        supervise(NAME, fails, stop=stop, backoff=Backoff(first=60.0, cap=60.0), logger=_SILENT)
    )
    await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1.0)  # not after the 60 s pause


async def test_pause_wakes_on_stop_or_on_a_given_future() -> None:
    stop = asyncio.Event()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await asyncio.wait_for(pause(stop, 60.0, done), 1.0)
    stop.set()
    await asyncio.wait_for(pause(stop, 60.0), 1.0)


async def test_retry_returns_the_first_result_after_backing_off() -> None:
    time, stop = FakeTime(), asyncio.Event()
    attempts = iter([OSError("down"), OSError("down"), "connected"])

    async def attempt() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = await retry(
        NAME,
        attempt,
        stop=stop,
        backoff=BACKOFF,
        quiet=(OSError,),
        logger=_SILENT,
        sleep=time.sleep,
        clock=time.clock,
    )
    assert result == "connected"
    assert time.sleeps == [1.0, 2.0]


async def test_retry_gives_none_when_stopped_first() -> None:
    stop = asyncio.Event()
    time = FakeTime()

    async def attempt() -> str:
        stop.set()
        raise OSError("down")

    result = await retry(
        NAME, attempt, stop=stop, backoff=BACKOFF, logger=_SILENT, sleep=time.sleep
    )
    assert result is None


_SILENT = logging.getLogger("tests.supervision.silent")
_SILENT.disabled = True
