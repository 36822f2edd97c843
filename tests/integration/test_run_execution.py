"""Executing runs: a DAG with a branch and a join in dependency order with the records
flowing between steps; retries with backoff, then a failed run with the plugin's message
while the other branch finishes; step and run timeouts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    appends_of,
    make_pipeline,
    run_events,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)


async def test_a_one_step_run_takes_three_appends(settings: Settings) -> None:
    """Decisions taken together are appended together, each state change still its own
    event: queued; claimed with its first steps started; the last step's outcome with the
    run's end."""
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "one", step("e", "Test.emit"))
        queued = await trigger(client, editor, pipeline_id)
        assert (await wait_run(client, editor, queued["run_id"]))["status"] == "succeeded"
        assert appends_of(settings.database_url or "", queued["run_id"]) == [
            ["RunQueued"],
            ["RunStarted", "RunStepStarted"],
            ["RunStepSucceeded", "RunSucceeded"],
        ]


def _index(events: list[tuple[str, dict[str, Any]]], name: str, step_name: str) -> int:
    return next(i for i, (n, e) in enumerate(events) if n == name and e["step"] == step_name)


async def test_a_dag_with_a_branch_and_a_join_runs_in_dependency_order(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "diamond",
            step("a", "Test.emit", config={"count": 3}),
            step("b", "Test.emit", "a", config={"count": 2}),
            step("c", "Test.sleep", "a", config={"seconds": 0.1}),
            step("d", "Test.emit", "b", "c", config={"count": 1}),
        )
        queued = await trigger(client, editor, pipeline_id, params={"day": "monday"})
        run = await wait_run(client, editor, queued["run_id"])

        assert run["status"] == "succeeded" and run["error"] is None, run
        assert run["attempt"] == 1 and run["duration_ms"] > 0
        steps = steps_of(run)
        counts = {name: (s["records_in"], s["records_out"]) for name, s in steps.items()}
        assert counts == {"a": (0, 3), "b": (3, 5), "c": (3, 3), "d": (8, 9)}
        for s in steps.values():
            assert s["status"] == "succeeded" and s["attempts"] == 1 and not s["reused"]
            assert s["started_at"] <= s["finished_at"] and s["duration_ms"] >= 0
        assert steps["d"]["depends_on"] == ["b", "c"]

        events = run_events(settings.database_url or "", queued["run_id"])
        for later, earlier in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
            assert _index(events, "RunStepStarted", later) > _index(
                events, "RunStepSucceeded", earlier
            ), (later, earlier)
        # The branches run together: both started before either finished.
        assert max(_index(events, "RunStepStarted", s) for s in "bc") < min(
            _index(events, "RunStepSucceeded", s) for s in "bc"
        )
        names = [n for n, _ in events]
        assert names[:2] == ["RunQueued", "RunStarted"] and names[-1] == "RunSucceeded"
        assert names.count("RunStepStarted") == 4


async def test_a_failing_step_retries_with_backoff_then_fails_the_run(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
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
        queued = await trigger(client, editor, pipeline_id)
        run = await wait_run(client, editor, queued["run_id"])

        assert run["status"] == "failed", run
        assert run["error"] == "step call failed: upstream said 503"
        steps = steps_of(run)
        assert steps["call"]["status"] == "failed" and steps["call"]["attempts"] == 4
        assert steps["call"]["error"] == "upstream said 503"
        assert steps["after_call"]["status"] == "skipped"
        assert "upstream step call failed" in steps["after_call"]["error"]
        assert steps["after_call"]["attempts"] == 0
        assert steps["other"]["status"] == steps["after_other"]["status"] == "succeeded"
        assert steps["after_other"]["records_out"] == 3

        events = run_events(settings.database_url or "", queued["run_id"])
        retrying = [e for n, e in events if n == "RunStepRetrying"]
        assert [e["step"] for e in retrying] == ["call"] * 3
        # retry_delay doubling per attempt, capped at max_delay, with equal jitter
        # (between half the delay and the delay).
        for event, delay in zip(retrying, (0.05, 0.08, 0.08), strict=True):
            assert delay / 2 <= event["retry_in"] <= delay, event
            assert event["error"] == "upstream said 503"
        starts = [e for n, e in events if n == "RunStepStarted" and e["step"] == "call"]
        for waited, next_start in zip(retrying, starts[1:], strict=True):
            gap = _at(next_start) - _at(waited)
            assert gap.total_seconds() >= waited["retry_in"], (waited, next_start)
        failed = [e for n, e in events if n == "RunFailed"]
        assert len(failed) == 1 and failed[0]["failed_step"] == "call"

        logs = await client.get(
            f"/api/v1/runs/{queued['run_id']}/logs", params={"step": "call"}, headers=editor
        )
        assert logs.status_code == 200, logs.text
        lines = logs.json()["items"]
        assert sorted({line["attempt"] for line in lines}) == [1, 2, 3, 4]
        assert all(
            line["level"] == "error" and line["message"] == "upstream said 503" for line in lines
        )


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


async def test_a_step_that_cannot_succeed_is_not_retried(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "bad-config",
            step(
                "x",
                "Test.fail",
                config={"message": "no such column", "retryable": False},
                retries=5,
            ),
        )
        run = await wait_run(client, editor, (await trigger(client, editor, pipeline_id))["run_id"])
        assert run["status"] == "failed" and run["error"] == "step x failed: no such column"
        assert steps_of(run)["x"]["attempts"] == 1


async def test_a_step_timeout_fails_the_attempt_and_is_retried(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "slow",
            step(
                "wait",
                "Test.sleep",
                config={"seconds": 600},
                timeout=0.2,
                retries=1,
                retry_delay=0.01,
            ),
            step("next", "Test.emit", "wait"),
        )
        run = await wait_run(client, editor, (await trigger(client, editor, pipeline_id))["run_id"])
        assert run["status"] == "failed", run
        assert run["error"] == "step wait failed: step timed out after 0.2s"
        steps = steps_of(run)
        assert steps["wait"]["status"] == "failed" and steps["wait"]["attempts"] == 2
        assert steps["next"]["status"] == "skipped"


async def test_a_run_timeout_ends_the_run_timed_out(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "too-long",
            step("first", "Test.emit", config={"count": 1}),
            step("wait", "Test.sleep", "first", config={"seconds": 600}),
            step("never", "Test.emit", "wait"),
            timeout=0.5,
        )
        queued = await trigger(client, editor, pipeline_id)
        run = await wait_run(client, editor, queued["run_id"])
        assert run["status"] == "timed_out", run
        assert run["error"] == "run timed out after 0.5s"
        statuses = {name: s["status"] for name, s in steps_of(run).items()}
        assert statuses == {"first": "succeeded", "wait": "cancelled", "never": "skipped"}
        names = [n for n, _ in run_events(settings.database_url or "", queued["run_id"])]
        assert names[-1] == "RunTimedOut" and "RunFailed" not in names

        status = await client.get(f"/api/v1/runs/{queued['run_id']}/status", headers=editor)
        assert status.status_code == 200, status.text
        assert status.json()["status"] == "timed_out" and status.json()["progress"] == 100.0
