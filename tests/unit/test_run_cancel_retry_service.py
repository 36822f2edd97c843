"""Cancelling and retrying runs, at the service level (tests/support/runs.py): a queued run
is cancelled at once and never claimed; a running one is stopped inside a slow step, the
step marked cancelled; a finished one refuses; a retry is a new linked run of the same
revision and params, and a retry from the failed step reuses the outputs of the steps
before it. tests/integration/test_run_cancel_retry.py sends a cancel through the whole
app (over NATS, to the executor running the run)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from uuid import UUID

import pytest

from application.executor import Claim, RunExecutor
from domain.errors import Conflict, InvalidCommand
from domain.pipeline import PipelineDefinition
from tests.support.runs import CTX, DEADLINE, RunWorld, statuses, step, until


@pytest.fixture
def world(tmp_path: Path) -> RunWorld:
    return RunWorld(tmp_path)


async def test_a_queued_run_is_cancelled_at_once_and_never_starts(world: RunWorld) -> None:
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))

    cancelled = world.runs.cancel(world.editor, run_id, CTX)

    assert cancelled.position is not None
    run = world.run(run_id)
    assert (run.status, run.error, run.started_at) == ("cancelled", "cancelled by user:u1", None)
    assert statuses(run) == {"e": "skipped"}
    with pytest.raises(InvalidCommand):
        world.runs.cancel(world.editor, run_id, CTX)
    # An executor that gets its work item later leaves it alone.
    assert world.claim(run_id) is None
    assert world.names(run_id) == ["RunQueued", "RunCancelled"]


async def test_a_run_inside_a_slow_step_is_cancelled_promptly(world: RunWorld) -> None:
    # The step would sleep an hour: the run ending at all shows the cancel reached it
    # (here through the execution's own re-reads of the run, as without NATS).
    run_id = world.trigger(
        world.pipeline(
            "slow",
            step("first", "Test.emit", config={"count": 2}),
            step("nap", "Test.sleep", "first", config={"seconds": 3600}),
            step("after", "Test.emit", "nap"),
        )
    )
    executor = world.executor(heartbeat_interval=0.05)
    claim = await asyncio.to_thread(executor.claim, run_id)
    assert claim is not None
    executing = asyncio.create_task(executor.execute(claim))
    await until(lambda: world.run(run_id).steps["nap"].status == "running", "nap to run")

    requested = world.runs.cancel(world.editor, run_id, CTX)

    assert requested.state.status == "running" and requested.state.cancel_requested
    assert await asyncio.wait_for(executing, DEADLINE) == "cancelled"
    run = world.run(run_id)
    assert (run.status, run.error) == ("cancelled", "cancelled by user:u1")  # who asked
    assert statuses(run) == {"first": "succeeded", "nap": "cancelled", "after": "skipped"}
    assert run.steps["nap"].finished_at is not None
    assert world.names(run_id)[-2:] == ["RunCancelRequested", "RunCancelled"]
    assert [line["message"] for line in world.logs.of(run_id, "nap")] == ["sleeping 3600.0s"]
    with pytest.raises(InvalidCommand):
        world.runs.cancel(world.editor, run_id, CTX)


def test_a_cancel_that_loses_the_race_to_the_executors_claim_asks_the_run_to_stop(
    world: RunWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The executor claims the run between the cancel's read of it and its append: the
    # append conflicts, and the cancel is decided again on the running run.
    run_id = world.trigger(world.pipeline("p", step("e", "Test.emit")))
    load = world.store.load
    raced: list[Claim | None] = []

    def load_then_claimed(*args: object, **kwargs: object) -> object:
        loaded = load(*args, **kwargs)
        if not raced:
            raced.append(world.claim(run_id))
        return loaded

    monkeypatch.setattr(world.store, "load", load_then_claimed)

    cancelled = world.runs.cancel(world.editor, run_id, CTX)

    assert raced and raced[0] is not None  # the claim won the version the cancel read
    assert cancelled.state.status == "running" and cancelled.state.cancel_requested
    assert world.names(run_id) == [
        "RunQueued",
        "RunStarted",
        "RunStepStarted",
        "RunCancelRequested",
    ]


async def claimed_hour_long_run(world: RunWorld) -> tuple[UUID, RunExecutor, Claim]:
    """A run of one step that sleeps an hour, claimed by an executor that re-reads its
    runs only every minute."""
    run_id = world.trigger(
        world.pipeline("slow", step("nap", "Test.sleep", config={"seconds": 3600}))
    )
    executor: RunExecutor = world.executor(heartbeat_interval=60.0)
    claim = await asyncio.to_thread(executor.claim, run_id)
    assert claim is not None
    return run_id, executor, claim


async def test_a_cancel_notice_stops_the_run_without_waiting_for_a_re_read(
    world: RunWorld,
) -> None:
    # The executor re-reads its runs only every minute here: the run can end in time only
    # through the notice (the executor role passes it on from NATS).
    run_id, executor, claim = await claimed_hour_long_run(world)
    executing = asyncio.create_task(executor.execute(claim))
    await until(lambda: world.run(run_id).steps["nap"].status == "running", "nap to run")
    world.runs.cancel(world.editor, run_id, CTX)

    executor.cancel_requested(str(run_id))

    assert await asyncio.wait_for(executing, DEADLINE) == "cancelled"
    assert statuses(world.run(run_id)) == {"nap": "cancelled"}


async def test_a_cancel_notice_before_the_execution_begins_stops_it_as_it_begins(
    world: RunWorld,
) -> None:
    # The claim read the run before the cancel was requested; the notice comes before the
    # execution has begun, and no re-read is due for a minute.
    run_id, executor, claim = await claimed_hour_long_run(world)
    world.runs.cancel(world.editor, run_id, CTX)
    executor.cancel_requested(str(run_id))

    assert await asyncio.wait_for(executor.execute(claim), DEADLINE) == "cancelled"
    assert statuses(world.run(run_id)) == {"nap": "cancelled"}
    assert world.names(run_id)[-2:] == ["RunCancelRequested", "RunCancelled"]


async def test_retry_queues_a_linked_run_of_the_same_revision_and_params(world: RunWorld) -> None:
    pipeline_id = world.pipeline("gated", step("e", "Test.emit"), step("g", "Test.gate", "e"))
    failed_id = world.trigger(pipeline_id, day=7)
    first = await world.execute(failed_id)
    assert (first.status, first.error) == ("failed", "step g failed: gate open is closed")
    revised = world.pipelines.revise(
        world.editor,
        pipeline_id,
        PipelineDefinition(name="gated", steps=(step("x", "Test.fail"),)),
        CTX,
    )
    assert revised.state.revision == 2
    world.files.mkdir(parents=True, exist_ok=True)
    (world.files / "open").touch()

    retried = world.runs.retry(world.editor, failed_id, from_failed_step=False, ctx=CTX).state
    world.heartbeats.run_ids.append(retried.id)

    assert (retried.status, retried.revision) == ("queued", 1)
    assert retried.id != failed_id
    second = await world.execute(retried.id)
    assert second.status == "succeeded"  # revision 1's steps, not Test.fail
    assert (second.retry_of, second.resume_from) == (str(failed_id), None)
    assert (second.trigger.kind, second.trigger.id) == ("retry", str(failed_id))
    assert second.params == {"day": 7} and list(second.steps) == ["e", "g"]
    assert not any(s.reused for s in second.steps.values())
    with pytest.raises(InvalidCommand):  # only a finished, unsuccessful run
        world.runs.retry(world.editor, retried.id, from_failed_step=False, ctx=CTX)


async def test_retry_from_the_failed_step_reuses_the_steps_before_it(world: RunWorld) -> None:
    pipeline_id = world.pipeline(
        "resumable",
        step("extract", "Test.emit", config={"count": 4}),
        step("clean", "Test.mark", "extract"),
        step("gate", "Test.gate", "clean"),
        step("load", "Test.mark", "gate"),
        step("audit", "Test.mark", "extract"),
    )
    failed_id = world.trigger(pipeline_id)
    first = await world.execute(failed_id)
    assert statuses(first) == {
        "extract": "succeeded",
        "clean": "succeeded",
        "gate": "failed",
        "load": "skipped",
        "audit": "succeeded",
    }
    (world.files / "open").touch()

    resumed_id = world.runs.retry(world.editor, failed_id, from_failed_step=True, ctx=CTX).state.id
    resumed = await world.execute(resumed_id)

    assert resumed.status == "succeeded"
    assert (resumed.resume_from, resumed.retry_of) == ("gate", str(failed_id))
    assert {n for n, s in resumed.steps.items() if s.reused} == {"extract", "clean", "audit"}
    assert set(statuses(resumed).values()) == {"succeeded"}
    # Reused outputs feed the steps after them, counts included.
    steps = resumed.steps
    assert (steps["clean"].records_in, steps["clean"].records_out) == (4, 4)
    assert steps["gate"].records_in == 4 and steps["load"].records_out == 4
    # The reused steps did not run again: no marks, no starts, no log lines.
    marks = world.marks()
    assert sorted(marks[:2]) == [(str(failed_id), "audit"), (str(failed_id), "clean")]
    assert marks[2:] == [(str(resumed_id), "load")]
    assert world.names(resumed_id).count("RunStepStarted") == 2
    assert {line["step"] for line in world.logs.of(resumed_id)} == {"gate", "load"}

    # A plain retry runs every step again.
    again_id = world.runs.retry(world.editor, failed_id, from_failed_step=False, ctx=CTX).state.id
    again = await world.execute(again_id)
    assert again.status == "succeeded" and not any(s.reused for s in again.steps.values())
    assert sorted(s for r, s in world.marks() if r == str(again_id)) == ["audit", "clean", "load"]
    with pytest.raises(InvalidCommand):  # the resumed run has no failed step
        world.runs.retry(world.editor, resumed_id, from_failed_step=True, ctx=CTX)


async def test_a_run_is_retried_once_at_a_time_and_again_once_its_retry_has_ended(
    world: RunWorld,
) -> None:
    pipeline_id = world.pipeline("p", step("x", "Test.fail", config={"message": "no"}))
    failed = await world.execute(world.trigger(pipeline_id))

    first = world.runs.retry(world.editor, failed.id, from_failed_step=False, ctx=CTX).state
    world.heartbeats.run_ids.append(first.id)

    # Recorded on the first run, in the same append as the retry.
    assert world.run(failed.id).retried_by == str(first.id)
    assert {"RunQueued", "RunRetried"} <= set(world.appends_of(first.id)[0])
    # A second click while the retry is queued: refused, naming the retry; nothing queued.
    with pytest.raises(Conflict, match=f"retried already, as run {first.id} \\(queued\\)"):
        world.runs.retry(world.editor, failed.id, from_failed_step=False, ctx=CTX)
    assert queued_runs(world) == 2
    # Once the retry has ended (failed again), the first run may be retried again.
    assert (await world.execute(first.id)).status == "failed"
    second = world.runs.retry(world.editor, failed.id, from_failed_step=False, ctx=CTX).state
    assert second.id != first.id and second.retry_of == str(failed.id)
    assert world.run(failed.id).retried_by == str(second.id)
    assert world.names(failed.id)[-2:] == ["RunRetried", "RunRetried"]


async def test_one_retry_at_a_time_holds_along_a_chain_of_retries(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("x", "Test.fail", config={"message": "no"}))
    r1 = await world.execute(world.trigger(pipeline_id))
    r2 = world.runs.retry(world.editor, r1.id, from_failed_step=False, ctx=CTX).state
    world.heartbeats.run_ids.append(r2.id)
    assert (await world.execute(r2.id)).status == "failed"
    r3 = world.runs.retry(world.editor, r2.id, from_failed_step=False, ctx=CTX).state

    # r3 is queued: retrying the chain's first run, or the run r3 retried, is refused.
    for run_id in (r1.id, r2.id):
        with pytest.raises(Conflict, match=f"as run {r3.id} \\(queued\\)"):
            world.runs.retry(world.editor, run_id, from_failed_step=False, ctx=CTX)
    # The run retried links its retry; the chain's first run, the chain's latest.
    assert (world.run(r2.id).retried_by, world.run(r1.id).retried_by) == (str(r3.id), str(r3.id))
    assert queued_runs(world) == 3


async def test_a_retry_finds_its_chains_first_run_in_one_read(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("x", "Test.fail", config={"message": "no"}))
    chain = [await world.execute(world.trigger(pipeline_id))]
    for _ in range(3):
        retry = world.runs.retry(world.editor, chain[-1].id, from_failed_step=False, ctx=CTX)
        world.heartbeats.run_ids.append(retry.state.id)
        chain.append(await world.execute(retry.state.id))
    assert [run.first_of_chain for run in chain] == [None] + [str(chain[0].id)] * 3
    world.reads.clear()

    last = world.runs.retry(world.editor, chain[-1].id, from_failed_step=False, ctx=CTX)

    # The first run is read (and the latest retry, to see it ended), not every run between.
    assert world.reads[chain[0].id] == 1
    assert all(world.reads[run.id] == 0 for run in chain[1:3])
    assert last.state.first_of_chain == str(chain[0].id)
    assert world.run(chain[0].id).retried_by == str(last.state.id)


def test_two_retries_racing_queue_one_run(world: RunWorld) -> None:
    pipeline_id = world.pipeline("p", step("x", "Test.fail", config={"message": "no"}))
    failed = asyncio.run(world.execute(world.trigger(pipeline_id)))
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def click() -> None:
        start.wait()
        try:
            world.runs.retry(world.editor, failed.id, from_failed_step=False, ctx=CTX)
            outcomes.append("queued")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["queued", "refused"]
    assert queued_runs(world) == 2  # the failed run and one retry
    assert world.names(failed.id).count("RunRetried") == 1


def queued_runs(world: RunWorld) -> int:
    return sum(names.count("RunQueued") for _, names in world.appends)
