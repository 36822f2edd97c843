"""A pipeline's recent run history, as analyze reads it (projections/step_history.py
counts it in SQL): per step how often it ran, failed and was skipped, its p50 and p95
duration and the records it took in and gave out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.pipeline import PipelineDefinition


@dataclass(frozen=True)
class StepHistory:
    step: str
    runs: int
    """Runs (of those looked at) in which the step was part of the revision."""
    executed: int
    """Of them, runs in which it ran to an outcome (succeeded or failed)."""
    failed: int
    skipped: int
    p50_ms: float | None
    p95_ms: float | None
    avg_records_in: float | None
    avg_records_out: float | None


@dataclass(frozen=True)
class RunHistory:
    window: int
    """How many of the latest finished runs were asked for."""
    runs: int
    succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    steps: list[StepHistory] = field(default_factory=list)


def history_figures(definition: PipelineDefinition, history: RunHistory | None) -> dict[str, Any]:
    """The figures analyze answers: the runs, each step of the current definition (in its
    order), the slowest step by p95 and the step that fails most."""
    if history is None or history.runs == 0:
        return {"runs": 0, "window": history.window if history else 0, "steps": [],
                "slowest_step": None, "most_failing_step": None}  # fmt: skip
    by_name = {s.step: s for s in history.steps}
    steps = []
    for step in definition.steps:
        seen = by_name.get(step.name)
        if seen is None:
            continue
        steps.append(
            {
                "step": seen.step,
                "runs": seen.runs,
                "executed": seen.executed,
                "failed": seen.failed,
                "skipped": seen.skipped,
                "failure_rate": round(seen.failed / seen.executed, 4) if seen.executed else None,
                "p50_duration_ms": seen.p50_ms,
                "p95_duration_ms": seen.p95_ms,
                "avg_records_in": seen.avg_records_in,
                "avg_records_out": seen.avg_records_out,
            }
        )
    timed = [s for s in steps if s["p95_duration_ms"] is not None]
    failing = [s for s in steps if s["failed"]]
    return {
        "runs": history.runs,
        "window": history.window,
        "success_rate": round(history.succeeded / history.runs, 4),
        "p50_duration_ms": history.p50_ms,
        "p95_duration_ms": history.p95_ms,
        "steps": steps,
        "slowest_step": max(timed, key=lambda s: s["p95_duration_ms"])["step"] if timed else None,
        "most_failing_step": (
            max(failing, key=lambda s: (s["failure_rate"] or 0, s["failed"]))["step"]
            if failing
            else None
        ),
    }
