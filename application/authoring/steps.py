"""The step each clause of a description (or of an instruction) asks for: a source or
a sink for the file, URL or table it names, a filter for its condition, a transform for
its change of fields, an aggregation, or a third-party plugin it names; what fits no
installed plugin is left unresolved for a question."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from application.authoring import phrases as ph
from application.authoring.plugins import PluginSpec, takes_url, words
from application.authoring.ports import AuthoringCatalog, Question

NOUNS = frozenset("rows records items entries lines ones orders users events".split())


@dataclass
class Planned:
    """One step decided from one phrase, before it is named and wired."""

    role: str  # source, process, sink
    base: str  # the step's name before de-duplication
    spec: PluginSpec
    phrase: str
    why: str
    config: dict[str, Any] = field(default_factory=dict)
    merge: str | None = None  # "filter": an adjacent filter's expression joins it with and
    target: ph.Target | None = None


class Plan:
    """The steps and notes one description (or one instruction) gives."""

    def __init__(self, specs: list[PluginSpec], catalog: AuthoringCatalog | None) -> None:
        self.specs = specs
        self.catalog = catalog
        self.steps: list[Planned] = []
        self.questions: list[Question] = []
        self.assumptions: list[str] = []
        self.unresolved: list[str] = []

    def of_role(self, role: str) -> list[PluginSpec]:
        return [s for s in self.specs if s.role == role]

    def capable(self, field_name: str, kind: str, cue: tuple[str, ...]) -> PluginSpec | None:
        """The processing plugin whose config has `field_name` of `kind`, best named by
        `cue` (then by ref: deterministic)."""
        found = [
            s
            for s in self.of_role("process")
            if (f := s.field(field_name)) is not None and f.kind == kind
        ]
        return max(found, key=lambda s: (s.score(cue), [-ord(c) for c in s.ref]), default=None)


def read_clause(plan: Plan, clause: str, first: bool) -> None:
    """Plan the step(s) one clause asks for, or a question about it."""
    lead, target = ph.lead(clause), ph.target_of(clause)
    lowered = clause.lower()
    writes = lead in ph.WRITE_VERBS or bool(re.match(r"(?:to|into)\b", lowered))
    if not writes and target is not None and lead not in ph.READ_VERBS:
        writes = bool(re.search(r"\b(?:to|into)\b", lowered)) and not first
    if (
        writes
        or lead in ph.READ_VERBS
        or lowered.startswith("from ")
        or (target is not None and lead not in ph.FILTER_WORDS + ph.AGGREGATE_WORDS)
    ):
        role = "sink" if writes else "source"
        for each in ph.targets_of(clause) or [None]:
            _endpoint(plan, role, clause, each)
    elif lead in ph.TRANSFORM_WORDS and (change := ph.transform(clause)) is not None:
        _transform(plan, clause, *change)
    elif lead in ph.FILTER_WORDS or re.search(r"[<>=]|\bwhere\b", lowered):
        _filter(plan, clause)
    elif lead in ph.AGGREGATE_WORDS and (agg := ph.aggregation(clause)) is not None:
        _aggregate(plan, clause, *agg)
    elif not _third_party(plan, clause):
        plan.unresolved.append(clause)


def _endpoint(plan: Plan, role: str, clause: str, target: ph.Target | None) -> None:
    direction = "read from" if role == "source" else "write to"
    candidates = plan.of_role(role)
    cue = words(clause)
    named = [s for s in candidates if s.name.lower() in cue]
    if target is None and not named:
        plan.questions.append(
            Question(
                role if role == "source" else "destination",
                f"{clause!r}: which file, URL or table should it {direction}? Installed: "
                + ", ".join(s.ref for s in candidates),
            )
        )
        return
    if named:
        fitting = named
    elif target is not None and target.kind == "file":
        fitting = [s for s in candidates if s.field("path") is not None]
        wanted = ph.EXTENSION_FORMAT.get(target.extension or "")
        fitting = [s for s in fitting if wanted in _formats(s)] or fitting
    elif target is not None and target.kind == "url":
        fitting = [s for s in candidates if takes_url(s) is not None]
    else:
        fitting = [s for s in candidates if s.score(ph.DATABASE) > 0]
    if not fitting:
        kind = target.kind if target else "it"
        plan.questions.append(
            Question(
                role if role == "source" else "destination",
                f"{clause!r}: no installed plugin can {direction} a {kind}; installed: "
                + ", ".join(s.ref for s in candidates),
            )
        )
        return
    spec = max(fitting, key=lambda s: (s.score(cue), [-ord(c) for c in s.ref]))
    base = {"file": "read", "url": "fetch", "database": "query"}.get(
        target.kind if target else "", spec.name
    )
    if role == "sink":
        base = {"read": "write", "fetch": "post", "query": "store"}.get(base, base)
    kind = f"a {target.kind} ({target.text})" if target and target.kind != "database" else "a table"
    why = f"{kind} to {direction}: {spec.ref} — {spec.entry.description}"
    plan.steps.append(Planned(role, base, spec, clause, why, target=target))


def _formats(spec: PluginSpec) -> tuple[str, ...]:
    found = spec.field("format")
    return found.enum if found is not None else ()


def _filter(plan: Plan, clause: str) -> None:
    spec = plan.capable("expression", "string", ("filter", "keep"))
    expression, assumed = filter_expression(clause)
    if expression is None:
        if re.fullmatch(r"(?:keep|select|filter)(?:\s+(?:only|the|all))*(?:\s+\w+)?", clause, re.I):
            return  # "keep rows" before "where ...": the condition follows
        plan.questions.append(
            Question("filter", f"{clause!r}: which condition? e.g. where amount > 100")
        )
        return
    if spec is None:
        plan.questions.append(Question("filter", f"{clause!r}: no installed plugin filters"))
        return
    if plan.catalog is not None and (problem := plan.catalog.expression(expression).problem):
        plan.questions.append(
            Question("filter", f"{clause!r} reads as {expression!r}, which fails: {problem}")
        )
        return
    plan.assumptions.extend(assumed)
    why = f"a condition: {spec.ref} — {spec.entry.description}"
    plan.steps.append(
        Planned("process", "filter", spec, clause, why, {"expression": expression}, "filter")
    )


def filter_expression(clause: str) -> tuple[str | None, list[str]]:
    """The expression a filtering clause states, and what was assumed to read it."""
    text = clause.strip().rstrip(".")
    negate = ph.lead(text) in ph.NEGATING or bool(re.match(r"filter\s+out\b", text, re.I))
    text = re.sub(
        r"^(?:(?:keep|filter|select|exclude|skip|discard|ignore|drop|remove|without|out|"
        r"only|the|all|any)\s+)+",
        "",
        text,
        flags=re.I,
    )
    assumed: list[str] = []
    found = re.search(r"\b(?:where|whose|with|having|if|that|which)\s+(.+)$", text, re.I)
    if found:
        expression = ph.condition(re.sub(r"^(?:has|have|is|are)\s+", "", found[1]))
        head = text[: found.start()].strip()
        if expression is not None and (status := _status(head)) is not None:
            expression = f"{status} and {expression}"  # "paid orders where amount > 1"
            assumed.append(f"{head.split()[0]!r} is a value of the field status ({clause!r})")
    elif (status := _status(text)) is not None:
        expression = status
        assumed.append(f"{text.split()[0]!r} is a value of the field status ({clause!r})")
    else:
        expression = ph.condition(text)
    if expression is None:
        return None, []
    if negate:
        simple = re.fullmatch(r"(\w+) == (.+)", expression)
        if simple and " and " not in expression and " or " not in expression:
            expression = f"{simple[1]} != {simple[2]}"
        else:
            expression = f"not ({expression})"
    return expression, assumed


def _status(text: str) -> str | None:
    """`paid orders`, `active` -> status == "paid": an adjective before a noun (or
    alone) reads as a value of the field status (an assumption the draft states)."""
    found = re.fullmatch(r"([A-Za-z][\w-]*)(?:\s+(\w+))?", text)
    if found is None or found[1].lower() in NOUNS:
        return None
    if found[2] is not None and found[2].lower() not in NOUNS and not found[2].endswith("s"):
        return None
    return f"status == {ph.literal(found[1])}"


def _transform(plan: Plan, clause: str, fields: dict[str, str], drop: list[str]) -> None:
    spec = plan.capable("fields", "object", ("transform", "add", "field"))
    if spec is None or (drop and spec.field("drop") is None):
        plan.questions.append(Question("transform", f"{clause!r}: no installed plugin does that"))
        return
    config: dict[str, Any] = {"fields": fields} if fields else {}
    if drop:
        config["drop"] = drop
    why = f"a change of fields: {spec.ref} — {spec.entry.description}"
    plan.steps.append(Planned("process", "transform", spec, clause, why, config))


def _aggregate(plan: Plan, clause: str, aggregates: dict[str, str], group: list[str]) -> None:
    spec = plan.capable("aggregates", "object", ("aggregate", "group"))
    if spec is None:
        plan.questions.append(Question("aggregate", f"{clause!r}: no installed plugin groups"))
        return
    config: dict[str, Any] = {"aggregates": aggregates}
    if group:
        config["group_by"] = group
    for name in group:
        if name.lower() in ("day", "week", "month", "year", "hour", "date"):
            plan.assumptions.append(
                f"records carry a field {name!r} to group by (a transform can derive it)"
            )
    why = f"an aggregation: {spec.ref} — {spec.entry.description}"
    plan.steps.append(Planned("process", "aggregate", spec, clause, why, config, "aggregate"))


def _third_party(plan: Plan, clause: str) -> bool:
    """A processing plugin the clause names by its name or keywords (not only by words
    of its description): `mask the card field` for Data_Processing.mask."""
    cue = words(clause)
    ranked = sorted(((s.score(cue[:3]), s.ref, s) for s in plan.of_role("process")), reverse=True)
    if not ranked or ranked[0][0] < 2:
        return False
    spec = ranked[0][2]
    why = f"named by its name or keywords: {spec.ref} — {spec.entry.description}"
    plan.steps.append(Planned("process", spec.name, spec, clause, why))
    return True
