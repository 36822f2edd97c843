"""describe and analyze on pipelines with known defects, in memory: each defect found
once, on its step, with its code and a suggestion; a credential's value never quoted."""

from __future__ import annotations

import msgspec

from application.authoring.analyze import analyze
from application.authoring.describe import DeploymentFact, ScheduleFact, describe
from application.authoring.history import RunHistory, StepHistory
from application.authoring.plugins import specs_of
from domain.pipeline import PipelineDefinition, StepSpec
from tests.unit.authoring.catalogs import Feed, catalog

CATALOG = catalog(Feed)
SPECS = specs_of(CATALOG.entries())
LEAKED = "hunter2-very-secret"

DEFECTIVE = PipelineDefinition(
    name="defects",
    steps=(
        StepSpec("fetch", "Input.http", {"url": "https://api.example.com/o",
                 "headers": {"Authorization": LEAKED}, "max_bytes": 100_000_000}),
        StepSpec("feed", "Input.feed", {"url": "https://feeds.example.com/x", "token": LEAKED},
                 retries=2, timeout=60),
        StepSpec("totals", "Data_Processing.aggregate",
                 {"aggregates": {"total": "sum:amount"}, "group_by": ["customer"]}, ("fetch",)),
        StepSpec("big", "Data_Processing.filter", {"expression": "amount > 100"}, ("totals",)),
        StepSpec("clean", "Data_Processing.transform", {"drop": ["email"]}, ("feed",)),
        StepSpec("greet", "Data_Processing.transform", {"fields": {"hi": "lower(email)"}},
                 ("clean",)),
        StepSpec("never", "Data_Processing.filter", {"expression": "false"}, ("greet",)),
        StepSpec("write", "Output.file", {"path": "out.jsonl"}, ("never",)),
        StepSpec("post", "Output.webhook", {"url": "https://user:pw@hooks.example.com/in",
                 "secret": LEAKED}, ("big",), retries=3, timeout=30),
    ),
)  # fmt: skip


def codes(findings: list) -> set[tuple[str | None, str, str]]:  # type: ignore[type-arg]
    return {(f.step, f.code, f.severity) for f in findings}


def test_analyze_finds_each_known_defect_on_its_step() -> None:
    found = analyze(DEFECTIVE, SPECS, CATALOG).findings
    assert codes(found) == {
        ("fetch", "network-no-retries", "warning"),
        ("fetch", "network-no-timeout", "warning"),
        ("fetch", "unbounded-read", "info"),
        ("fetch", "plain-credential", "error"),
        ("feed", "unbounded-read", "warning"),
        ("feed", "plain-credential", "error"),
        ("big", "unknown-field", "error"),
        ("greet", "unknown-field", "error"),
        ("never", "filter-never-passes", "warning"),
        ("write", "unreachable-step", "warning"),
        ("post", "plain-credential", "error"),
        ("post", "possible-credential", "warning"),
    }
    assert all(f.suggestion and f.message for f in found)
    assert LEAKED not in msgspec.json.encode(found).decode()
    assert "pw@" not in msgspec.json.encode(found).decode()
    # errors first, then warnings, then info; within a severity, in step order
    ranks = [("error", "warning", "info").index(f.severity) for f in found]
    assert ranks == sorted(ranks)
    big = next(f for f in found if f.step == "big")
    assert (
        "'amount'" in big.message and "totals" in big.message and "customer, total" in big.message
    )
    greet = next(f for f in found if f.step == "greet")
    assert "'email'" in greet.message and "clean drops it" in greet.message


def test_a_sound_pipeline_has_no_findings() -> None:
    sound = PipelineDefinition(
        name="sound",
        steps=(
            StepSpec("read", "Input.file", {"path": "in.csv", "format": "csv"}),
            StepSpec("t", "Data_Processing.transform", {"fields": {"n": "amount * 2"}}, ("read",)),
            StepSpec("agg", "Data_Processing.aggregate",
                     {"aggregates": {"s": "sum:n"}, "group_by": ["customer"]}, ("t",)),
            StepSpec("f", "Data_Processing.filter", {"expression": "s > 1"}, ("agg",)),
            StepSpec("post", "Output.webhook", {"url": "https://h.example.com/x",
                     "secret": {"secret": "hook"}}, ("f",), retries=3, timeout=30),
        ),
    )  # fmt: skip
    assert analyze(sound, SPECS, CATALOG).findings == []


def test_figures_and_history_findings() -> None:
    history = RunHistory(
        window=100, runs=10, succeeded=6, p50_ms=100.0, p95_ms=900.0,
        steps=[
            StepHistory("fetch", 10, 10, 4, 0, 50.0, 800.0, 0.0, 120.0),
            StepHistory("totals", 10, 6, 0, 4, 5.0, 9.0, 120.0, 3.0),
            StepHistory("never", 10, 0, 0, 10, None, None, None, None),
            StepHistory("gone", 10, 10, 10, 0, 1.0, 2.0, 1.0, 1.0),  # not in the definition
        ],
    )  # fmt: skip
    result = analyze(DEFECTIVE, SPECS, CATALOG, history)
    assert ("fetch", "failing-step", "warning") in codes(result.findings)
    assert ("never", "never-run", "warning") in codes(result.findings)
    figures = result.figures
    assert figures["runs"] == 10 and figures["success_rate"] == 0.6
    assert [s["step"] for s in figures["steps"]] == ["fetch", "totals", "never"]
    assert figures["steps"][0]["failure_rate"] == 0.4
    assert figures["slowest_step"] == "fetch" and figures["most_failing_step"] == "fetch"


def test_describe_tells_steps_inputs_outputs_schedules_and_deployments() -> None:
    deployments = [DeploymentFact("staging", "active", 3, "immediate")]
    schedules = [ScheduleFact("nightly", "0 2 * * *", "UTC", True, "the staging deployment")]
    told = describe(DEFECTIVE, 3, SPECS, deployments, schedules)
    assert told.summary.startswith("Pipeline 'defects' (revision 3) has 9 steps: 2 inputs")
    texts = {s.step: s.text for s in told.steps}
    assert texts["totals"] == (
        "groups the records by customer and computes total = the sum of amount, after fetch."
    )
    assert texts["big"] == "keeps only the records for which `amount > 100` is true, after totals."
    assert texts["write"].startswith("writes the records to the file out.jsonl (jsonl, overwrite)")
    assert "retried up to 3 times" in texts["post"] and "30s" in texts["post"]
    assert told.schedules == [
        "job nightly runs the staging deployment on the schedule '0 2 * * *' (UTC)"
    ]
    assert told.deployments == ["staging: active, serving revision 3 (immediate)"]
    assert len(told.inputs) == 2 and len(told.outputs) == 2
    assert (
        LEAKED not in told.text
        and "pw@" not in told.text
        and "https://hooks.example.com/in" in told.text
    )
    assert told == describe(DEFECTIVE, 3, SPECS, deployments, schedules)  # deterministic
