"""The draft being edited by regenerate's instructions: steps found by name or by
what they are, steps added before or after another (rewiring what depended on it),
removed (what followed it now follows what it followed)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from application.authoring.generator import assemble
from application.authoring.plugins import PluginSpec
from application.authoring.ports import AuthoringCatalog
from application.authoring.steps import Plan, read_clause
from domain.pipeline import PipelineDefinition, StepSpec

STEP_FIELDS = {"retries": int, "retry_delay": float, "max_delay": float, "timeout": float}
ROLE_WORDS = {"source": "source", "input": "source", "destination": "sink", "output": "sink",
              "sink": "sink"}  # fmt: skip


class Editor:
    def __init__(
        self, definition: PipelineDefinition, specs: Sequence[PluginSpec], catalog: AuthoringCatalog
    ) -> None:
        self.steps = list(definition.steps)
        self.definition = definition
        self.specs = list(specs)
        self.by_ref = {s.ref: s for s in specs}
        self.catalog = catalog

    def result(self) -> PipelineDefinition:
        return msgspec.structs.replace(self.definition, steps=tuple(self.steps))

    def spec_of(self, step: StepSpec) -> PluginSpec:
        spec = self.by_ref.get(step.plugin)
        if spec is None:
            raise LookupError(f"step {step.name}'s plugin {step.plugin} is not installed")
        return spec

    def find(self, text: str) -> StepSpec:
        """A step by its name, or by what it is ("the filter") when only one is."""
        text = re.sub(r"^(?:the\s+)?(?:step\s+)?", "", text.strip(), flags=re.I).strip("'\"")
        text = re.sub(r"\s+step$", "", text, flags=re.I)
        for step in self.steps:
            if step.name == text:
                return step
        word = text.lower()
        kinds = {"filter": "expression", "transform": "fields", "aggregate": "aggregates",
                 "aggregation": "aggregates"}  # fmt: skip
        matches = [
            s
            for s in self.steps
            if (spec := self.by_ref.get(s.plugin)) is not None
            and (
                (word in kinds and spec.field(kinds[word]) is not None and spec.role == "process")
                or ROLE_WORDS.get(word) == spec.role
                or word == spec.name
            )
        ]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(s.name for s in self.steps)
        if matches:
            raise LookupError(f"{text!r} could mean {', '.join(s.name for s in matches)}")
        raise LookupError(f"no step {text!r}; the steps are {names}")

    def new_steps(self, clause: str) -> list[StepSpec]:
        plan = Plan(self.specs, self.catalog)
        read_clause(plan, clause, first=False)
        if plan.unresolved or plan.questions or not plan.steps:
            why = plan.questions[0].question if plan.questions else "not a step it knows"
            raise LookupError(why)
        draft = assemble(plan, {}, "draft")
        if draft.questions:
            raise LookupError(draft.questions[0].question)
        taken = {s.name for s in self.steps}
        made = []
        for step in draft.definition.steps:
            name, n = step.name, 1
            while name in taken:
                n += 1
                name = f"{step.name}-{n}"
            taken.add(name)
            made.append(msgspec.structs.replace(step, name=name, depends_on=()))
        return made

    def insert(self, new: StepSpec, where: str | None, anchor: StepSpec | None) -> str:
        spec = self.by_ref[new.plugin]
        if anchor is None:
            sinks = [s for s in self.steps if self._role(s) == "sink"]
            if spec.role == "sink":
                feed = sinks[0].depends_on if sinks else self._ends()
                return self._place(msgspec.structs.replace(new, depends_on=feed), len(self.steps))
            if sinks:
                where, anchor = "before", sinks[0]
            else:
                ends = self._ends()
                where, anchor = "after", next(s for s in self.steps if s.name == ends[-1])
        index = self.steps.index(anchor)
        if where == "after":
            new = msgspec.structs.replace(new, depends_on=(anchor.name,))
            self.steps = [
                _swap(s, anchor.name, (new.name,)) if s.name != anchor.name else s
                for s in self.steps
            ]
            return self._place(new, index + 1)
        new = msgspec.structs.replace(new, depends_on=anchor.depends_on)
        self.steps[index] = msgspec.structs.replace(anchor, depends_on=(new.name,))
        return self._place(new, index)

    def _place(self, new: StepSpec, index: int) -> str:
        self.steps.insert(index, new)
        after = f" after {', '.join(new.depends_on)}" if new.depends_on else ""
        return f"added step {new.name} ({new.plugin}){after}"

    def remove(self, step: StepSpec) -> str:
        self.steps = [_swap(s, step.name, step.depends_on) for s in self.steps if s is not step]
        return f"removed step {step.name}; the steps after it now follow {_names(step.depends_on)}"

    def _role(self, step: StepSpec) -> str:
        spec = self.by_ref.get(step.plugin)
        return spec.role if spec else "process"

    def _ends(self) -> tuple[str, ...]:
        used = {d for s in self.steps for d in s.depends_on}
        ends = [s.name for s in self.steps if s.name not in used]
        return tuple(ends[-1:]) if ends else ()


def _swap(step: StepSpec, old: str, new: Sequence[str]) -> StepSpec:
    if old not in step.depends_on:
        return step
    deps: list[str] = []
    for d in step.depends_on:
        for name in new if d == old else (d,):
            if name not in deps and name != step.name:
                deps.append(name)
    return msgspec.structs.replace(step, depends_on=tuple(deps))


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "nothing (they start the run)"
