"""The default generator: deterministic and offline. Each clause of the description is
recognised as a source, a filter, a transform, an aggregation or a sink (steps.py, with
the phrases of phrases.py) and given to the installed plugin whose catalog entry fits it
(plugins.py); what it cannot resolve becomes a question. Same input, same draft: no ids,
no clocks, stable order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from application.authoring import phrases as ph
from application.authoring.configs import fill
from application.authoring.plugins import STOPWORDS, specs_of, words
from application.authoring.ports import (
    AuthoringCatalog,
    Draft,
    GenerationRequest,
    PluginEntry,
    Question,
    Reason,
)
from application.authoring.steps import Plan, Planned, read_clause
from domain.pipeline import PipelineDefinition, StepSpec


class DefaultGenerator:
    def __init__(self, catalog: AuthoringCatalog | None = None) -> None:
        self._catalog = catalog

    def generate(self, request: GenerationRequest, plugins: Sequence[PluginEntry]) -> Draft:
        plan = Plan(specs_of(plugins), self._catalog)
        extra = frozenset(w for s in plan.specs for w in words(s.name.replace("_", " ")))
        clauses = ph.split_clauses(request.description, extra)
        if "source" in request.hints:
            clauses.insert(0, f"read {request.hints['source']}")
        if "destination" in request.hints:
            clauses.append(f"write to {request.hints['destination']}")
        for i, clause in enumerate(clauses):
            read_clause(plan, clause, first=i == 0)
        for clause in plan.unresolved:
            plan.questions.append(
                Question("description", f"{clause!r}: no installed plugin matches this phrase")
            )
        draft = assemble(plan, request.hints, request.name or name_of(request.description))
        if not any(p.role == "source" for p in plan.steps) and not any(
            q.key == "source" for q in draft.questions
        ):
            draft.questions.insert(
                0,
                Question(
                    "source",
                    "Where do the records come from? Name a file (orders.csv), a URL or a "
                    "table; installed sources: " + ", ".join(s.ref for s in plan.of_role("source")),
                ),
            )
        if not any(p.role == "sink" for p in plan.steps) and not any(
            q.key == "destination" for q in draft.questions
        ):
            draft.questions.append(
                Question("destination", "Where should the records go (a file, a URL)?")
            )
        return Draft(
            PipelineDefinition(
                name=draft.definition.name,
                description=request.description.strip()[:10_000],
                steps=draft.definition.steps,
            ),
            draft.reasoning,
            draft.assumptions,
            draft.questions,
        )


def assemble(plan: Plan, hints: Mapping[str, str], name: str) -> Draft:
    """Name, wire and configure the planned steps: sources side by side, then a chain,
    sinks each after the step before them; adjacent filters merged with `and`."""
    merged: list[Planned] = []
    for planned in plan.steps:
        last = merged[-1] if merged else None
        if last is not None and planned.merge == "filter" and last.merge == "filter":
            both = " and ".join(
                f"({e})" if " or " in e else e
                for e in (last.config["expression"], planned.config["expression"])
            )
            last.config["expression"] = both
            last.phrase = f"{last.phrase}; {planned.phrase}"
            continue
        if last is not None and planned.merge == last.merge == "aggregate":
            # "group by region" and "sum amount": one aggregation, said in two clauses
            one, other = last.config, planned.config
            if (not one["aggregates"] or not one.get("group_by")) and (
                not other["aggregates"] or not other.get("group_by")
            ):
                one["aggregates"] = {**one["aggregates"], **other["aggregates"]}
                one["group_by"] = one.get("group_by") or other.get("group_by") or []
                last.phrase = f"{last.phrase}; {planned.phrase}"
                continue
        merged.append(planned)
    for planned in merged:
        if planned.merge == "aggregate":
            planned.config["aggregates"] = planned.config["aggregates"] or {"count": "count"}
            if not planned.config.get("group_by"):
                planned.config.pop("group_by", None)
    steps: list[StepSpec] = []
    reasoning: list[Reason] = []
    questions = list(plan.questions)
    used: dict[str, int] = {}
    frontier: list[str] = []
    sources: list[str] = []
    for planned in merged:
        used[planned.base] = used.get(planned.base, 0) + 1
        name_ = planned.base if used[planned.base] == 1 else f"{planned.base}-{used[planned.base]}"
        config, asked, assumed = fill(
            planned.spec, name_, planned.phrase, planned.target, hints, planned.config
        )
        questions.extend(asked)
        plan.assumptions.extend(assumed)
        depends: list[str] = []
        if planned.role == "source":
            sources.append(name_)
        else:
            if sources:  # the sources read side by side feed what follows them
                frontier, sources = sources, []
            depends = list(frontier)
            if planned.role == "process":
                frontier = [name_]
        steps.append(StepSpec(name_, planned.spec.ref, config, tuple(depends)))
        reasoning.append(Reason(planned.phrase, name_, planned.spec.ref, planned.why))
    return Draft(
        PipelineDefinition(name=name, steps=tuple(steps)),
        reasoning,
        sorted(set(plan.assumptions), key=plan.assumptions.index),
        _unique(questions),
    )


def _unique(questions: list[Question]) -> list[Question]:
    seen: set[tuple[str, str]] = set()
    out = []
    for q in questions:
        if (q.key, q.question) not in seen:
            seen.add((q.key, q.question))
            out.append(q)
    return out


def name_of(description: str) -> str:
    """A name from the description's first telling words: `orders-paid-customer`."""
    text = ph.URL.sub(lambda m: " " + m.group(0).rstrip("/").rsplit("/", 1)[-1] + " ", description)
    text = ph.FILE.sub(lambda m: " " + m.group(1).rsplit("/", 1)[-1].split(".")[0] + " ", text)
    chosen = [w for w in words(text) if w not in STOPWORDS and w not in ph.ACTIONS and len(w) > 2]
    unique = list(dict.fromkeys(chosen))[:4]
    return "-".join(unique)[:60] or "draft"
