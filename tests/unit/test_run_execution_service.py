"""Executing runs, at the service level (tests/support/runs.py: in-memory store, the real
executor, step runner and Test plugins): decisions taken together appended together, a
DAG in dependency order with its branches concurrent and the records flowing between
steps, retries with backoff then a failed run while the other branch finishes, steps
that are not retried, step and run timeouts. tests/integration/test_run_execution.py
runs a DAG through the whole app (NATS work queue, read model, API)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest

from application.errors import StepFailed
from application.ports import StepCall, StepOutcome
from tests.support.runs import RunWorld, index, statuses, step


@pytest.fixture
def world(tmp_path: Path) -> RunWorld:
    return RunWorld(tmp_path)


async def test_a_one_step_run_takes_three_appends(world: RunWorld) -> None:
    """Queued; claimed with its first steps started; the last step's outcome with the
    run's end. Each state change is still its own event; the tenant's usage (runs per
    day, running runs) rides in the same appends (the refills of the process's usage
    shards are appends of their own, not the run's)."""
    run_id = world.trigger(world.pipeline("one", step("e", "Test.emit")))
    assert (await world.execute(run_id)).status == "succeeded"
    assert world.appends_of(run_id) == [
        ["RunQueued", "UsageShardTaken"],
        ["RunStarted", "RunStepStarted", "UsageShardTaken"],
        ["RunStepSucceeded", "RunSucceeded", "UsageShardReleased"],
    ]


async def test_a_dag_with_a_branch_and_a_join_runs_in_dependency_order(world: RunWorld) -> None:
    pipeline_id = world.pipeline(
        "diamond",
        step("a", "Test.emit", config={"count": 3}),
        step("b", "Test.emit", "a", config={"count": 2}),
        step("c", "Test.sleep", "a", config={"seconds": 0.05}),
        step("d", "Test.emit", "b", "c", config={"count": 1}),
    )
    run_id = world.trigger(pipeline_id, day="monday")
    run = await world.execute(run_id)

    assert (run.status, run.error, run.attempt) == ("succeeded", None, 1)
    assert run.params == {"day": "monday"}
    counts = {name: (s.records_in, s.records_out) for name, s in run.steps.items()}
    assert counts == {"a": (0, 3), "b": (3, 5), "c": (3, 3), "d": (8, 9)}
    assert all(s.status == "succeeded" and s.attempts == 1 for s in run.steps.values())
    events = world.events(run_id)
    for later, earlier in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert index(events, "RunStepStarted", later) > index(events, "RunStepSucceeded", earlier)
    # The branches run together: both started before either finished.
    assert max(index(events, "RunStepStarted", s) for s in "bc") < min(
        index(events, "RunStepSucceeded", s) for s in "bc"
    )
    names = [n for n, _ in events]
    assert names[:2] == ["RunQueued", "RunStarted"] and names[-1] == "RunSucceeded"
    assert names.count("RunStepStarted") == 4


async def test_a_failing_step_retries_with_backoff_then_fails_the_run(world: RunWorld) -> None:
    pipeline_id = world.pipeline(
        "flaky-api",
        step("read", "Test.emit", config={"count": 2}),
        step(
            "call",
            "Test.fail",
            "read",
            config={"message": "upstream said 503"},
            retries=3,
            retry_delay=0.05,
            max_delay=0.08,
        ),
        step("after_call", "Test.emit", "call"),
        step("other", "Test.sleep", "read", config={"seconds": 0.3}),
        step("after_other", "Test.emit", "other", config={"count": 1}),
    )
    run_id = world.trigger(pipeline_id)
    run = await world.execute(run_id)

    assert (run.status, run.error) == ("failed", "step call failed: upstream said 503")
    call, after_call = run.steps["call"], run.steps["after_call"]
    assert (call.status, call.attempts, call.error) == ("failed", 4, "upstream said 503")
    assert (after_call.status, after_call.attempts) == ("skipped", 0)
    assert "upstream step call failed" in (after_call.error or "")
    assert statuses(run)["other"] == statuses(run)["after_other"] == "succeeded"
    assert run.steps["after_other"].records_out == 3

    events = world.events(run_id)
    retrying = [e for n, e in events if n == "RunStepRetrying"]
    assert [e.step for e in retrying] == ["call"] * 3
    # retry_delay doubling per attempt, capped at max_delay, with equal jitter (between
    # half the delay and the delay); the next attempt waits at least that long.
    for event, delay in zip(retrying, (0.05, 0.08, 0.08), strict=True):
        assert delay / 2 <= event.retry_in <= delay, event
        assert event.error == "upstream said 503"
    starts = [e for n, e in events if n == "RunStepStarted" and e.step == "call"]
    for waited, next_start in zip(retrying, starts[1:], strict=True):
        assert (next_start.timestamp - waited.timestamp).total_seconds() >= waited.retry_in
    failed = [e for n, e in events if n == "RunFailed"]
    assert len(failed) == 1 and failed[0].failed_step == "call"

    lines = world.logs.of(run_id, "call")
    assert sorted({line["attempt"] for line in lines}) == [1, 2, 3, 4]
    assert all((line["level"], line["message"]) == ("error", "upstream said 503") for line in lines)


async def test_a_step_that_cannot_succeed_is_not_retried(world: RunWorld) -> None:
    pipeline_id = world.pipeline(
        "bad-config",
        step("x", "Test.fail", config={"message": "no such column", "retryable": False}, retries=5),
    )
    run = await world.execute(world.trigger(pipeline_id))
    assert (run.status, run.error) == ("failed", "step x failed: no such column")
    assert run.steps["x"].attempts == 1


async def test_an_input_file_that_arrives_after_the_first_attempt_is_read_on_a_retry(
    world: RunWorld,
) -> None:
    """The commonest reason to set `retries`: the file has not arrived yet. It lands
    between the first attempt's failure and the retry (the step runner is wrapped to
    drop it there, so no timing decides the outcome)."""
    pipeline_id = world.pipeline(
        "late-file",
        step("read", "Input.file", config={"path": "orders.jsonl"}, retries=2, retry_delay=0.01),
    )
    run_step = world.steps.run
    failures: list[str] = []

    async def file_arrives_after_a_failure(call: StepCall, cancelled: asyncio.Event) -> Any:
        try:
            return await run_step(call, cancelled)
        except StepFailed as failed:
            failures.append(str(failed))
            world.files.mkdir(parents=True, exist_ok=True)
            (world.files / "orders.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
            raise

    world.steps.run = file_arrives_after_a_failure  # type: ignore[method-assign]
    run = await world.execute(world.trigger(pipeline_id))

    assert failures == ["file 'orders.jsonl': no such file in the tenant's folder (yet)"]
    assert (run.status, run.steps["read"].attempts, run.steps["read"].records_out) == (
        "succeeded",
        2,
        2,
    )
    assert [e.step for n, e in world.events(run.id) if n == "RunStepRetrying"] == ["read"]


async def test_an_input_path_naming_a_folder_is_a_configuration_error_and_not_retried(
    world: RunWorld,
) -> None:
    (world.files / "orders").mkdir(parents=True)
    pipeline_id = world.pipeline(
        "folder", step("read", "Input.file", config={"path": "orders"}, retries=5)
    )
    run = await world.execute(world.trigger(pipeline_id))
    assert (run.status, run.error) == (
        "failed",
        "step read failed: file 'orders' is a folder, not a file",
    )
    assert run.steps["read"].attempts == 1
    assert "RunStepRetrying" not in world.names(run.id)


async def test_a_config_the_plugin_cannot_read_is_not_retried(world: RunWorld) -> None:
    """A saved config that no longer parses (the plugin changed since it was checked)."""
    pipeline_id = world.pipeline("reader", step("read", "Test.emit", retries=5))
    run_step = world.steps.run

    async def with_a_broken_config(call: StepCall, cancelled: asyncio.Event) -> StepOutcome:
        spec = msgspec.structs.replace(call.step, config={"count": "many"})
        return await run_step(dataclasses.replace(call, step=spec), cancelled)

    world.steps.run = with_a_broken_config  # type: ignore[method-assign]
    run = await world.execute(world.trigger(pipeline_id))
    assert run.status == "failed" and "invalid config" in (run.error or "")
    assert run.steps["read"].attempts == 1


async def test_a_step_timeout_fails_the_attempt_and_is_retried(world: RunWorld) -> None:
    pipeline_id = world.pipeline(
        "slow",
        step(
            "wait", "Test.sleep", config={"seconds": 600}, timeout=0.1, retries=1, retry_delay=0.01
        ),
        step("next", "Test.emit", "wait"),
    )
    run = await world.execute(world.trigger(pipeline_id))
    assert (run.status, run.error) == ("failed", "step wait failed: step timed out after 0.1s")
    assert (run.steps["wait"].status, run.steps["wait"].attempts) == ("failed", 2)
    assert run.steps["next"].status == "skipped"


async def test_a_run_timeout_ends_the_run_timed_out(world: RunWorld) -> None:
    pipeline_id = world.pipeline(
        "too-long",
        step("first", "Test.emit", config={"count": 1}),
        step("wait", "Test.sleep", "first", config={"seconds": 600}),
        step("never", "Test.emit", "wait"),
        timeout=0.3,
    )
    run_id = world.trigger(pipeline_id)
    run = await world.execute(run_id)
    assert (run.status, run.error) == ("timed_out", "run timed out after 0.3s")
    assert statuses(run) == {"first": "succeeded", "wait": "cancelled", "never": "skipped"}
    names = world.names(run_id)
    assert names[-1] == "RunTimedOut" and "RunFailed" not in names
