"""The draft of a pipeline's next revision from instructions (POST
/pipelines/{id}:regenerate), offline: add a step (a filter, a transform, an aggregation,
a destination) before or after another, remove a step, write somewhere else instead,
change a config field or a step's retries and timeout, rename a step. An instruction it
cannot apply is named in UnappliedInstructions (422); nothing is saved."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from application.authoring.editor import Editor
from application.authoring.edits import apply
from application.authoring.plugins import PluginSpec
from application.authoring.ports import AuthoringCatalog
from domain.errors import InvalidCommand
from domain.pipeline import PipelineDefinition

VERBS = ("add", "insert", "remove", "delete", "drop", "change", "set", "replace", "write",
         "send", "post", "save", "rename", "retry", "use", "make", "also")  # fmt: skip


class UnappliedInstructions(InvalidCommand):
    """Instructions the offline regenerator could not apply: each (instruction, why)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__(
            "could not apply: " + "; ".join(f"{i!r} ({why})" for i, why in problems),
            "instructions",
        )


@dataclass(frozen=True)
class Applied:
    instruction: str
    change: str


def split_instructions(text: str) -> list[str]:
    verbs = "|".join(VERBS)
    parts = re.split(rf"[;\n]+|\.\s+|\.$|,?\s+(?:and\s+)?then\s+|,\s*(?:and\s+)?(?=(?:{verbs})\b)"
                     rf"|\s+and\s+(?=(?:{verbs})\b)", text.strip())  # fmt: skip
    return [p.strip(" ,.") for p in parts if p and p.strip(" ,.")]


def regenerate(
    definition: PipelineDefinition,
    instructions: str,
    specs: Sequence[PluginSpec],
    catalog: AuthoringCatalog,
) -> tuple[PipelineDefinition, list[Applied]]:
    """The next revision's draft and what each instruction changed, or
    UnappliedInstructions naming every one that could not be applied."""
    editor = Editor(definition, specs, catalog)
    applied: list[Applied] = []
    problems: list[tuple[str, str]] = []
    clauses = split_instructions(instructions)
    if not clauses:
        raise UnappliedInstructions([(instructions, "no instruction given")])
    for clause in clauses:
        try:
            applied.append(Applied(clause, apply(editor, clause)))
        except LookupError as error:
            problems.append((clause, str(error).strip("'\"")))
    if problems:
        raise UnappliedInstructions(problems)
    return editor.result(), applied
