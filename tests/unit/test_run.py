"""The Run aggregate: given these events, when this command, then these events (or this
error). Pure domain, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from application.run_execution import backoff
from domain.errors import InvalidCommand
from domain.events import CommandContext, NornEvent
from domain.pipeline import PipelineDefinition, StepSpec
from domain.run import (
    ExecutionLost,
    Run,
    RunCancelled,
    RunCancelRequested,
    RunCrashed,
    RunFailed,
    RunQueued,
    RunRequeued,
    RunStarted,
    RunStepFailed,
    RunStepRetrying,
    RunStepSkipped,
    RunStepStarted,
    RunStepSucceeded,
    RunSucceeded,
    RunTimedOut,
    Trigger,
)

CTX = CommandContext("user:u1", "corr-1")
# a -> b -> d, a -> c (d depends on b only)
DEFINITION = PipelineDefinition(
    name="orders",
    steps=(
        StepSpec("a", "Input.file", {"path": "in.jsonl"}),
        StepSpec("b", "Data_Processing.filter", {"expression": "x"}, ("a",)),
        StepSpec("c", "Output.file", {"path": "c.jsonl"}, ("a",)),
        StepSpec("d", "Output.file", {"path": "d.jsonl"}, ("b",)),
    ),
)


def queued(**overrides: Any) -> Run:
    fields: dict[str, Any] = {
        "run_id": uuid4(),
        "tenant_id": "t1",
        "pipeline_id": "p1",
        "pipeline_name": "orders",
        "revision": 3,
        "definition": DEFINITION,
        "params": {"day": "2026-11-23"},
        "trigger": Trigger("user", "u1"),
        "ctx": CTX,
    }
    fields.update(overrides)
    return Run.queue(**fields)


def started() -> tuple[Run, int]:
    run = queued()
    attempt = run.start("executor-1", CTX)
    run.collect_events()
    return run, attempt


def new_events(run: Run) -> list[type[NornEvent]]:
    return [type(e) for e in run.collect_events()]


def test_queue_pins_the_definition_params_and_trigger() -> None:
    run = queued()
    [event] = run.collect_events()
    assert isinstance(event, RunQueued)
    assert event.definition == DEFINITION and event.revision == 3
    assert event.params == {"day": "2026-11-23"}
    assert event.trigger == Trigger("user", "u1")
    assert (event.tenant_id, event.actor, event.correlation_id) == ("t1", "user:u1", "corr-1")
    assert run.status == "queued" and run.attempt == 0
    assert {name: s.status for name, s in run.steps.items()} == dict.fromkeys("abcd", "pending")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trigger": Trigger("robot")}, "trigger must be one of"),
        ({"resume_from": "zzz"}, "no step 'zzz'"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 11}, "max_attempts"),
    ],
)
def test_queue_refuses_bad_arguments(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        queued(**overrides)


def test_start_claims_the_next_attempt_and_only_once() -> None:
    run = queued()
    run.collect_events()
    assert run.start("executor-1", CTX) == 1
    [event] = run.collect_events()
    assert isinstance(event, RunStarted) and event.attempt == 1
    assert event.executor_id == "executor-1" and run.status == "running"
    with pytest.raises(InvalidCommand, match="not queued"):
        run.start("executor-2", CTX)


def test_steps_start_only_when_their_dependencies_succeeded() -> None:
    run, attempt = started()
    assert run.ready_steps() == ["a"]
    with pytest.raises(InvalidCommand, match="dependencies"):
        run.start_step("b", attempt, CTX)
    run.start_step("a", attempt, CTX)
    assert run.ready_steps() == []
    run.step_succeeded("a", attempt, 0, 10, CTX)
    assert run.ready_steps() == ["b", "c"]  # independent branches, in definition order
    assert new_events(run) == [RunStepStarted, RunStepSucceeded]


def test_a_failed_step_retries_then_fails_and_skips_what_depends_on_it() -> None:
    run, attempt = started()
    run.start_step("a", attempt, CTX)
    run.step_succeeded("a", attempt, 0, 10, CTX)
    run.start_step("b", attempt, CTX)
    run.start_step("c", attempt, CTX)
    run.collect_events()

    assert run.step_failed("b", attempt, "boom", 0.5, CTX) is True
    assert run.steps["b"].status == "retrying" and run.steps["b"].error == "boom"
    run.start_step("b", attempt, CTX)
    assert run.steps["b"].attempts == 2
    assert run.step_failed("b", attempt, "boom again", None, CTX) is False
    events = run.collect_events()
    assert [type(e) for e in events] == [
        RunStepRetrying,
        RunStepStarted,
        RunStepFailed,
        RunStepSkipped,
    ]
    assert isinstance(events[0], RunStepRetrying) and events[0].retry_in == 0.5
    assert isinstance(events[3], RunStepSkipped) and events[3].step == "d"
    assert events[3].reason == "upstream step b failed"
    assert run.steps["c"].status == "running"  # the other branch goes on

    with pytest.raises(InvalidCommand, match="still pending or running"):
        run.finish(attempt, CTX)
    run.step_succeeded("c", attempt, 10, 10, CTX)
    run.finish(attempt, CTX)
    [*_, failed] = run.collect_events()
    assert isinstance(failed, RunFailed) and failed.failed_step == "b"
    assert failed.error == "step b failed: boom again"
    assert run.status == "failed" and run.finished


def test_a_run_whose_steps_all_succeed_succeeds() -> None:
    run, attempt = started()
    for step in ("a", "b", "c", "d"):
        run.start_step(step, attempt, CTX)
        run.step_succeeded(step, attempt, 1, 1, CTX)
    run.finish(attempt, CTX)
    assert new_events(run)[-1] is RunSucceeded
    assert run.status == "succeeded" and run.error is None


def test_illegal_step_transitions_are_refused() -> None:
    run, attempt = started()
    with pytest.raises(InvalidCommand, match="cannot succeed"):
        run.step_succeeded("a", attempt, 0, 0, CTX)
    with pytest.raises(InvalidCommand, match="cannot fail"):
        run.step_failed("a", attempt, "x", None, CTX)
    with pytest.raises(InvalidCommand, match="no step 'zzz'"):
        run.start_step("zzz", attempt, CTX)
    run.start_step("a", attempt, CTX)
    with pytest.raises(InvalidCommand, match="cannot start"):
        run.start_step("a", attempt, CTX)


def test_cancel_of_a_queued_run_is_immediate() -> None:
    run = queued()
    run.collect_events()
    assert run.request_cancel("no longer needed", CTX) is True
    [event] = run.collect_events()
    assert isinstance(event, RunCancelled) and event.previous_status == "queued"
    assert run.status == "cancelled"
    assert all(s.status == "skipped" for s in run.steps.values())
    with pytest.raises(InvalidCommand, match="already cancelled"):
        run.request_cancel("again", CTX)


def test_cancel_of_a_running_run_asks_its_executor_once() -> None:
    run, attempt = started()
    run.start_step("a", attempt, CTX)
    run.collect_events()
    assert run.request_cancel("stop", CTX) is True
    assert run.request_cancel("stop", CTX) is False
    assert new_events(run) == [RunCancelRequested]
    assert run.status == "running" and run.cancel_requested
    run.cancelled(attempt, CTX)
    assert new_events(run) == [RunCancelled]
    assert run.status == "cancelled"
    assert run.steps["a"].status == "cancelled" and run.steps["b"].status == "skipped"


def test_a_timed_out_run_ends_with_its_running_steps_cancelled() -> None:
    run, attempt = started()
    run.start_step("a", attempt, CTX)
    run.timed_out(attempt, 30.0, CTX)
    assert new_events(run)[-1] is RunTimedOut
    assert run.status == "timed_out" and run.error == "run timed out after 30s"
    assert run.steps["a"].status == "cancelled"


def test_recovery_queues_again_until_the_attempts_are_spent() -> None:
    run = queued(max_attempts=2)
    first = run.start("executor-1", CTX)
    run.start_step("a", first, CTX)
    assert run.recover(first, "executor-1 vanished", CTX) == "queued"
    assert run.steps["a"].status == "pending" and run.executor_id is None
    second = run.start("executor-2", CTX)
    assert second == 2
    assert run.recover(second, "executor-2 vanished", CTX) == "crashed"
    assert [e for e in new_events(run) if e in (RunRequeued, RunCrashed)] == [
        RunRequeued,
        RunCrashed,
    ]
    assert run.error is not None and "gave up after 2 attempt(s)" in run.error


def test_recovery_of_a_run_being_cancelled_cancels_it() -> None:
    run, attempt = started()
    run.request_cancel("stop", CTX)
    assert run.recover(attempt, "executor vanished", CTX) == "cancelled"


def test_an_executor_that_lost_its_attempt_cannot_record_anything() -> None:
    run, first = started()
    run.recover(first, "missed heartbeats", CTX)
    second = run.start("executor-2", CTX)
    run.collect_events()
    for command in (
        lambda: run.start_step("a", first, CTX),
        lambda: run.step_succeeded("a", first, 0, 0, CTX),
        lambda: run.cancelled(first, CTX),
        lambda: run.finish(first, CTX),
        lambda: run.timed_out(first, 1.0, CTX),
        lambda: run.release(first, "shutting down", CTX),
    ):
        with pytest.raises(ExecutionLost):
            command()
    assert run.collect_events() == []
    run.start_step("a", second, CTX)  # the owner can


def test_release_requeues_without_spending_an_attempt() -> None:
    run = queued(max_attempts=1)
    attempt = run.start("executor-1", CTX)
    assert run.release(attempt, "executor-1 shut down", CTX) == "queued"
    again = run.start("executor-2", CTX)
    assert again == 2
    assert run.recover(again, "executor-2 vanished", CTX) == "crashed"
    assert run.error is not None and "gave up after 1 attempt(s)" in run.error


def test_a_released_attempt_leaves_the_recovery_budget_whole() -> None:
    run = queued(max_attempts=2)
    first = run.start("executor-1", CTX)
    run.release(first, "executor-1 shut down", CTX)
    second = run.start("executor-2", CTX)
    assert run.recover(second, "executor-2 vanished", CTX) == "queued"
    third = run.start("executor-3", CTX)
    assert run.recover(third, "executor-3 vanished", CTX) == "crashed"
    assert run.error is not None and "gave up after 2 attempt(s)" in run.error


def test_a_running_run_cancelled_keeps_the_reason_of_the_request() -> None:
    run, attempt = started()
    run.request_cancel("cancelled by user:u1", CTX)
    run.cancelled(attempt, CTX)
    assert run.status == "cancelled" and run.error == "cancelled by user:u1"


def test_release_of_a_run_being_cancelled_cancels_it() -> None:
    run, attempt = started()
    run.start_step("a", attempt, CTX)
    run.request_cancel("stop", CTX)
    run.collect_events()
    assert run.release(attempt, "executor-1 shut down", CTX) == "cancelled"
    assert new_events(run) == [RunCancelled]
    assert run.steps["a"].status == "cancelled"


def test_a_resumed_run_marks_reused_steps_succeeded_without_running_them() -> None:
    run = queued(resume_from="b", retry_of=str(uuid4()))
    attempt = run.start("executor-1", CTX)
    run.step_succeeded("a", attempt, 0, 10, CTX, reused=True)
    assert run.steps["a"].status == "succeeded" and run.steps["a"].reused
    assert run.ready_steps() == ["b", "c"]


def test_backoff_doubles_up_to_max_delay_with_equal_jitter() -> None:
    step = StepSpec("s", "Test.fail", retry_delay=1.0, max_delay=5.0)
    assert [backoff(step, n, lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert [backoff(step, n, lambda: 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]


def test_run_events_carry_their_time() -> None:
    run = queued()
    attempt = run.start("x", CTX)
    run.start_step("a", attempt, CTX)
    started_at = run.steps["a"].started_at
    assert isinstance(started_at, datetime) and started_at.tzinfo == UTC


def test_the_event_that_ends_a_run_carries_its_outcome_for_consumers() -> None:
    """NATS consumers act on a run's end without calling back (README "Consuming events
    from NATS"): pipeline, revision, what triggered it, status, duration, error."""
    run = queued(trigger=Trigger("deployment", "d1", environment="prod", release=2))
    run.collect_events()
    attempt = run.start("executor-1", CTX)
    for step in ("a", "b", "c", "d"):
        run.start_step(step, attempt, CTX)
        run.step_succeeded(step, attempt, 1, 1, CTX)
    run.finish(attempt, CTX)
    [*_, ended] = run.collect_events()

    assert isinstance(ended, RunSucceeded)
    assert (ended.pipeline_id, ended.pipeline_name, ended.revision) == ("p1", "orders", 3)
    assert (ended.trigger, ended.deployment_id, ended.environment) == ("deployment", "d1", "prod")
    assert ended.job_id is None and ended.status == "succeeded" and ended.attempt == 1
    assert ended.message is None and ended.started_at == run.started_at
    assert ended.duration_seconds == (ended.timestamp - run.started_at).total_seconds() >= 0


def test_a_failed_or_never_started_run_says_why_and_has_no_duration() -> None:
    run, attempt = started()
    run.start_step("a", attempt, CTX)
    run.step_failed("a", attempt, "no such file", None, CTX)
    run.finish(attempt, CTX)
    [*_, failed] = run.collect_events()
    assert isinstance(failed, RunFailed) and failed.status == "failed"
    assert failed.message == failed.error == "step a failed: no such file"
    assert failed.duration_seconds is not None

    job_run = queued(trigger=Trigger("job", "j1", deployment_id="d2"))
    job_run.collect_events()
    job_run.request_cancel("not today", CTX)
    [cancelled] = job_run.collect_events()
    assert isinstance(cancelled, RunCancelled) and cancelled.status == "cancelled"
    assert (cancelled.job_id, cancelled.deployment_id) == ("j1", "d2")
    assert cancelled.message == "not today"
    assert cancelled.started_at is None and cancelled.duration_seconds is None
