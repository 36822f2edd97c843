"""Executing runs through the whole app (work item over NATS, executor role, plugins,
runs read model, API): a DAG with a branch and a join in dependency order with the
records flowing between steps. The logic of execution (appends, retries and backoff,
timeouts) is tested on the in-memory store: tests/unit/test_run_execution_service.py."""

from __future__ import annotations

from typing import Any

from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    run_events,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)


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
