"""Authoring use cases: generate a draft (validated as POST /pipelines would, saved
nowhere), regenerate a pipeline's next revision, and the pipeline a description or an
analysis is about (loaded as the principal may see it: another tenant's is NotFound).
Describing and analysing themselves are pure (describe.py, analyze.py); the API hands
them the deployments, schedules and run history it reads from the read models."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from application.authoring.analyze import Analysis, analyze
from application.authoring.describe import DeploymentFact, Description, ScheduleFact, describe
from application.authoring.generator import DefaultGenerator
from application.authoring.history import RunHistory
from application.authoring.plugins import PluginSpec, specs_of
from application.authoring.ports import (
    AuthoringCatalog,
    Draft,
    GenerationRequest,
    Generator,
    Question,
)
from application.authoring.regenerate import Applied, regenerate
from application.errors import ServiceUnavailable
from application.pipeline_history import summarize_changes
from application.pipelines import PipelineService
from application.principal import Principal
from domain.errors import FieldError
from domain.pipeline import Pipeline, PipelineDefinition

log = logging.getLogger(__name__)
_STEP_FIELD = re.compile(r"^steps\[(\d+)\]\.config\.(\w+)")


@dataclass(frozen=True)
class Checked:
    """A draft with the verdict of the real validation; every problem it found that no
    question asks already is a question too."""

    draft: Draft
    valid: bool


@dataclass(frozen=True)
class Regenerated:
    pipeline_id: str
    base_revision: int
    checked: Checked
    applied: list[Applied]
    changes: dict[str, list[str]] = field(default_factory=dict)


class AuthoringService:
    def __init__(
        self,
        pipelines: PipelineService,
        catalog: AuthoringCatalog,
        generator: Generator | None = None,
    ) -> None:
        self._pipelines = pipelines
        self._catalog = catalog
        self._default = DefaultGenerator(catalog)
        self._generator = generator
        """An installation's own (NORN_GENERATOR), else None: the default answers."""

    def specs(self) -> list[PluginSpec]:
        return specs_of(self._catalog.entries())

    def generate(self, principal: Principal, request: GenerationRequest) -> Checked:
        entries = self._catalog.entries()
        if self._generator is None:
            draft = self._default.generate(request, entries)
        else:
            try:
                draft = self._generator.generate(request, entries)
                if not isinstance(draft, Draft) or not isinstance(
                    draft.definition, PipelineDefinition
                ):
                    raise TypeError(f"generate() answered {type(draft).__name__}, not a Draft")
            except Exception:
                log.exception("the configured generator (NORN_GENERATOR) failed")
                raise ServiceUnavailable(
                    "the configured generator failed; the server log says why"
                ) from None
        return self._checked(principal, draft)

    def regenerate(self, principal: Principal, pipeline_id: UUID, instructions: str) -> Regenerated:
        pipeline = self.load(principal, pipeline_id)
        definition, applied = regenerate(
            pipeline.definition, instructions, self.specs(), self._catalog
        )
        checked = self._checked(principal, Draft(definition))
        return Regenerated(
            str(pipeline.id),
            pipeline.revision,
            checked,
            applied,
            summarize_changes(pipeline.definition, definition),
        )

    def load(self, principal: Principal, pipeline_id: UUID) -> Pipeline:
        return self._pipelines.load(principal, pipeline_id)

    def describe(
        self,
        pipeline: Pipeline,
        deployments: Sequence[DeploymentFact],
        schedules: Sequence[ScheduleFact],
    ) -> Description:
        return describe(
            pipeline.definition, pipeline.revision, self.specs(), deployments, schedules
        )

    def analyze(self, pipeline: Pipeline, history: RunHistory | None) -> Analysis:
        return analyze(pipeline.definition, self.specs(), self._catalog, history)

    def _checked(self, principal: Principal, draft: Draft) -> Checked:
        errors = self._pipelines.validate(principal, draft.definition)
        asked = {q.key for q in draft.questions}
        questions = list(draft.questions)
        for error in errors:
            key = _key(draft.definition, error)
            if key not in asked:
                asked.add(key)
                questions.append(Question(key, f"{error.field}: {error.message}"))
        return Checked(
            Draft(draft.definition, draft.reasoning, draft.assumptions, questions), not errors
        )


def _key(definition: PipelineDefinition, error: FieldError) -> str:
    """The hint key a validation problem is answered by: `<step>.<field>` for a step's
    config field, else the problem's field."""
    found = _STEP_FIELD.match(error.field)
    if found and int(found[1]) < len(definition.steps):
        return f"{definition.steps[int(found[1])].name}.{found[2]}"
    return error.field
