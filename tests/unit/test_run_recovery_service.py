"""Recovery of runs whose executor vanished, and executors handing runs back, at the
service level (tests/support/runs.py; heartbeats in memory with a clock the tests move):
a silent run is queued again while attempts remain, then crashed; a beating or just
started one is left alone; an executor that was only cut off finds its attempt gone and
stops without recording anything; a graceful stop hands the run back without spending
an attempt. tests/e2e/test_executor_crash.py kills and stops real executor processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

from domain.events import CommandContext
from domain.run import Run
from tests.support.runs import CTX, DEADLINE, RunWorld, step, until

TIMEOUT = 30.0  # RunWorld's heartbeat timeout


def slow_once(world: RunWorld) -> UUID:
    """A pipeline whose step sleeps an hour on its first execution in a run only (the
    run, recovered or handed back, then finishes at once on its next executor)."""
    return world.pipeline(
        "long",
        step("first", "Test.emit", config={"count": 2}),
        step("nap", "Test.sleep", "first", config={"seconds": 3600, "once": True}),
    )


async def napping(world: RunWorld, run_id: UUID) -> None:
    """Until the nap sleeps: its step is running and its plugin has left the marker that
    keeps it from sleeping again (RunStepStarted is stored before the plugin begins, and
    a step stopped in between would sleep an hour on the next executor)."""
    await until(lambda: world.logs.of(run_id, "nap") != [], "nap to sleep")


async def test_a_silent_run_is_queued_again_while_attempts_remain_then_crashed(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path, max_attempts=2)
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    # Each executor claims the run and dies before its first beat.
    assert world.claim(run_id, world.executor("executor-a")) is not None
    assert await world.recovery.sweep() == []  # started a moment ago: not yet lost

    world.heartbeats.later(TIMEOUT + 1)
    assert await world.recovery.sweep() == [(str(run_id), "queued")]
    run = world.run(run_id)
    assert (run.status, run.attempt, run.executor_id) == ("queued", 1, None)
    requeued = [e for n, e in world.events(run_id) if n == "RunRequeued"]
    assert requeued[0].reason == "executor executor-a stopped heart-beating"

    assert world.claim(run_id, world.executor("executor-b")) is not None
    world.heartbeats.later(TIMEOUT + 1)
    assert await world.recovery.sweep() == [(str(run_id), "crashed")]
    run = world.run(run_id)
    assert (run.status, run.attempt) == ("crashed", 2)
    assert "executor executor-b stopped heart-beating; gave up after 2 attempt(s)" in (
        run.error or ""
    )
    assert await world.recovery.sweep() == []  # nothing is recovered twice


async def test_a_cut_off_executor_stops_and_records_nothing_once_its_run_is_recovered(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path)
    run_id = world.trigger(slow_once(world))
    first = world.executor("executor-a")
    claim = await asyncio.to_thread(first.claim, run_id)
    assert claim is not None
    executing = asyncio.create_task(first.execute(claim))
    await napping(world, run_id)
    assert await world.recovery.sweep() == []  # it beats

    world.heartbeats.muted.add("executor-a")  # alive, but its beats no longer arrive
    world.heartbeats.later(TIMEOUT + 1)
    assert await world.recovery.sweep() == [(str(run_id), "queued")]

    assert await asyncio.wait_for(executing, DEADLINE) == "lost"
    run = await world.execute(run_id, world.executor("executor-b"))
    assert (run.status, run.attempt, run.executor_id) == ("succeeded", 2, "executor-b")
    names = world.names(run_id)
    after = world.events(run_id)[names.index("RunRequeued") + 1 :]
    assert all(getattr(e, "attempt", 2) == 2 for _, e in after), after  # nothing of attempt 1


async def test_a_stopping_executor_hands_its_run_back_without_spending_an_attempt(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path, max_attempts=1)
    run_id = world.trigger(slow_once(world))
    first = world.executor("executor-a")
    claim = await asyncio.to_thread(first.claim, run_id)
    assert claim is not None
    executing = asyncio.create_task(first.execute(claim))
    await napping(world, run_id)

    first.release_all()  # a graceful stop, as on SIGTERM

    assert await asyncio.wait_for(executing, DEADLINE) == "queued"
    requeued = [e for n, e in world.events(run_id) if n == "RunRequeued"]
    assert [(e.reason, e.released) for e in requeued] == [("executor executor-a shut down", True)]
    # One attempt allowed, one spent on the release: still not a crash, the next one runs.
    run = await world.execute(run_id, world.executor("executor-b"))
    assert (run.status, run.attempt, run.released_attempts) == ("succeeded", 2, 1)
    assert "RunCrashed" not in world.names(run_id) and "RunCancelled" not in world.names(run_id)
    # An execution that begins while its executor stops is handed back at once.
    later_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    late = await asyncio.to_thread(first.claim, later_id)
    assert late is not None
    assert await asyncio.wait_for(first.execute(late), DEADLINE) == "queued"


async def test_a_run_being_cancelled_is_cancelled_when_recovered(tmp_path: Path) -> None:
    world = RunWorld(tmp_path)
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    assert world.claim(run_id) is not None
    world.runs.cancel(world.editor, run_id, CTX)

    world.heartbeats.later(TIMEOUT + 1)

    assert await world.recovery.sweep() == [(str(run_id), "cancelled")]
    assert world.run(run_id).error == "cancelled by user:u1"


async def test_a_stale_report_about_an_attempt_that_moved_on_changes_nothing(
    tmp_path: Path,
) -> None:
    world = RunWorld(tmp_path)
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    assert world.claim(run_id) is not None

    async def read_before_another_process_recovered_it(*_: object) -> list[tuple[str, int]]:
        return [(str(run_id), 1)]

    world.heartbeats.stale = read_before_another_process_recovered_it  # type: ignore[method-assign]
    run = world.store.load(Run, run_id, "run")
    run.recover(1, "recovered elsewhere", CommandContext("system:recovery", "corr"))
    world.store.append(run)
    before = world.names(run_id)

    assert await world.recovery.sweep() == []  # queued again already: nothing to do
    assert world.names(run_id) == before
