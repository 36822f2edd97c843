"""Bodies of the authoring routes (README "Authoring help")."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from api.schemas.common import Request
from api.schemas.pipelines import ChangesOut, StepOut, TriggerOut

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
HintValue = Annotated[str, msgspec.Meta(max_length=4096)]


class GenerateRequest(Request):
    description: Text
    """What the pipeline should do, in plain words."""
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    hints: Annotated[dict[str, HintValue], msgspec.Meta(max_length=100)] = {}
    """Answers to earlier questions, by their `key` ("read.path", "source", ...)."""


class RegenerateRequest(Request):
    instructions: Text


class DraftDefinition(msgspec.Struct):
    """A body POST /pipelines (or PUT) takes as it is."""

    name: str
    description: str
    tags: list[str]
    steps: list[StepOut]
    namespace: str | None
    timeout: float | None
    triggers: list[TriggerOut]


class ReasonOut(msgspec.Struct):
    phrase: str
    step: str | None
    plugin: str | None
    why: str


class QuestionOut(msgspec.Struct):
    key: str
    """The `hints` key that answers it."""
    question: str


class GenerateOut(msgspec.Struct):
    definition: DraftDefinition
    valid: bool
    reasoning: list[ReasonOut]
    assumptions: list[str]
    questions: list[QuestionOut]


class AppliedOut(msgspec.Struct):
    instruction: str
    change: str


class RegenerateOut(msgspec.Struct):
    pipeline_id: str
    base_revision: int
    """The revision the draft was made from; saving it (PUT) makes the next one."""
    definition: DraftDefinition
    valid: bool
    changes: ChangesOut
    applied: list[AppliedOut]
    questions: list[QuestionOut]


class StepTextOut(msgspec.Struct):
    step: str
    plugin: str
    text: str


class DescribeOut(msgspec.Struct):
    pipeline_id: str
    revision: int
    summary: str
    steps: list[StepTextOut]
    inputs: list[str]
    outputs: list[str]
    schedules: list[str]
    deployments: list[str]
    triggers: list[str]
    text: str
    """All of it as one plain text."""


class FindingOut(msgspec.Struct):
    severity: str
    """error, warning or info."""
    step: str | None
    code: str
    message: str
    suggestion: str


class AnalyzeOut(msgspec.Struct):
    pipeline_id: str
    revision: int
    findings: list[FindingOut]
    figures: dict[str, Any]
    """From the latest finished runs (`window`): runs, success_rate, p50/p95 duration,
    per step (runs, executed, failed, skipped, failure_rate, p50/p95 duration, average
    records in and out), slowest_step and most_failing_step."""
