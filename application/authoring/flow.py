"""What a pipeline's steps read and make, from their configs and the plugins' schemas:
the order they run in, which config values are expressions and which fields they read,
and the fields each step's records can be known to carry (a source's are open: any;
an aggregation's are exactly its groups and results; a transform adds and drops)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from application.authoring.plugins import PluginSpec
from application.authoring.ports import AuthoringCatalog
from domain.pipeline import PipelineDefinition, StepSpec


def run_order(definition: PipelineDefinition) -> list[StepSpec]:
    """The steps in an order that runs each after what it depends on (definition order
    among equals; a step in a cycle last)."""
    done: list[StepSpec] = []
    placed: set[str] = set()
    remaining = list(definition.steps)
    while remaining:
        ready = [s for s in remaining if all(d in placed for d in s.depends_on)] or remaining[:1]
        step = ready[0]
        remaining.remove(step)
        done.append(step)
        placed.add(step.name)
    return done


def downstream(definition: PipelineDefinition, start: str) -> list[str]:
    """Every step that runs after `start` by dependency, in definition order."""
    after: set[str] = set()
    changed = True
    while changed:
        changed = False
        for step in definition.steps:
            if step.name not in after and (
                start in step.depends_on or after & set(step.depends_on)
            ):
                after.add(step.name)
                changed = True
    return [s.name for s in definition.steps if s.name in after]


def expressions(spec: PluginSpec | None, config: Mapping[str, Any]) -> dict[str, str]:
    """Config path -> expression text: an `expression` string, and the values of an
    object `fields` (a transform's)."""
    if spec is None:
        return {}
    out: dict[str, str] = {}
    expression = spec.field("expression")
    if expression is not None and expression.kind == "string":
        if isinstance(config.get("expression"), str):
            out["config.expression"] = config["expression"]
    fields = spec.field("fields")
    if fields is not None and fields.kind == "object" and isinstance(config.get("fields"), dict):
        for name, text in config["fields"].items():
            if isinstance(text, str):
                out[f"config.fields.{name}"] = text
    return out


@dataclass
class Fields:
    """What is known of the fields of a step's records."""

    open: bool = True
    """Any field may be there (a source's records: nothing says which)."""
    known: set[str] = field(default_factory=set)
    made_by: str | None = None
    """The step after which the set is closed (an aggregation)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Field -> the step that dropped it."""


def reads(
    spec: PluginSpec | None, config: Mapping[str, Any], catalog: AuthoringCatalog
) -> dict[str, set[str]]:
    """Config path -> fields it reads: expressions, and an aggregation's fields."""
    out = {
        path: set(catalog.expression(text).fields)
        for path, text in expressions(spec, config).items()
    }
    if spec is not None and spec.field("aggregates") is not None:
        for name, text in (config.get("aggregates") or {}).items():
            if isinstance(text, str) and ":" in text:
                out[f"config.aggregates.{name}"] = {text.partition(":")[2]}
        if spec.field("group_by") is not None:
            for i, name in enumerate(config.get("group_by") or []):
                out[f"config.group_by[{i}]"] = {name}
    return {path: names for path, names in out.items() if names}


def produced(spec: PluginSpec | None, step: StepSpec, before: list[Fields]) -> Fields:
    """The fields of `step`'s records, given those of the steps it depends on."""
    config = step.config
    incoming = _union(before)
    if spec is None or spec.role == "source":
        return Fields()
    if spec.field("aggregates") is not None:
        names = set(config.get("aggregates") or {}) | set(config.get("group_by") or [])
        return Fields(open=False, known=names, made_by=step.name)
    if spec.field("fields") is not None and spec.field("fields").kind == "object":  # type: ignore[union-attr]
        out = Fields(incoming.open, set(incoming.known), incoming.made_by, dict(incoming.dropped))
        for name in config.get("fields") or {}:
            out.known.add(name)
            out.dropped.pop(name, None)
        for name in config.get("drop") or []:
            out.known.discard(name)
            out.dropped[name] = step.name
        return out
    if spec.role == "sink" or spec.field("expression") is not None:
        return incoming
    return Fields()  # a plugin whose effect on fields is not known: anything may come


def _union(before: list[Fields]) -> Fields:
    if not before:
        return Fields()
    out = Fields(
        any(f.open for f in before),
        set().union(*(f.known for f in before)),
        next((f.made_by for f in before if f.made_by), None),
    )
    for f in before:
        for name, by in f.dropped.items():
            if all(name in g.dropped for g in before):
                out.dropped[name] = by
    return out
