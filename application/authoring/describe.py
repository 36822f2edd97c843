"""A pipeline in plain language (POST /pipelines/{id}:describe), from its definition,
its deployments and the jobs and event triggers that start it: deterministic, no model.
A credential is never quoted: a secret reference is named, a plain value is hidden, and
URLs lose their user info and query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from application.authoring.plugins import PluginSpec, takes_url
from domain.pipeline import PipelineDefinition, StepSpec


@dataclass(frozen=True)
class DeploymentFact:
    environment: str
    status: str
    active_revision: int | None
    strategy: str


@dataclass(frozen=True)
class ScheduleFact:
    job: str
    cron: str
    timezone: str
    enabled: bool
    target: str
    """"the pipeline" or "the <environment> deployment"."""


@dataclass(frozen=True)
class StepText:
    step: str
    plugin: str
    text: str


@dataclass(frozen=True)
class Description:
    summary: str
    steps: list[StepText]
    inputs: list[str]
    outputs: list[str]
    schedules: list[str]
    deployments: list[str]
    triggers: list[str]
    text: str


def describe(
    definition: PipelineDefinition,
    revision: int,
    specs: Sequence[PluginSpec],
    deployments: Sequence[DeploymentFact] = (),
    schedules: Sequence[ScheduleFact] = (),
) -> Description:
    by_ref = {s.ref: s for s in specs}
    steps = [StepText(s.name, s.plugin, _step(s, by_ref.get(s.plugin))) for s in definition.steps]
    roles = {
        s.name: by_ref[s.plugin].role if s.plugin in by_ref else "process" for s in definition.steps
    }
    inputs = [t.text for t in steps if roles[t.step] == "source"]
    outputs = [t.text for t in steps if roles[t.step] == "sink"]
    processing = sum(1 for r in roles.values() if r == "process")
    summary = (
        f"Pipeline {definition.name!r} (revision {revision}) has {_count(len(steps), 'step')}: "
        f"{_count(len(inputs), 'input')}, {_count(processing, 'processing step')} and "
        f"{_count(len(outputs), 'output')}."
    )
    if definition.description:
        summary += f" Its description: {definition.description}"
    schedule_texts = [
        f"job {s.job} runs {s.target} on the schedule {s.cron!r} ({s.timezone})"
        + ("" if s.enabled else ", disabled")
        for s in sorted(schedules, key=lambda s: (s.job, s.cron))
    ]
    deployment_texts = [
        f"{d.environment}: {d.status}, "
        + (f"serving revision {d.active_revision}" if d.active_revision else "no active release")
        + f" ({d.strategy})"
        for d in sorted(deployments, key=lambda d: d.environment)
    ]
    triggers = [
        f"runs after each {t.on} event" + (f" where {_pairs(t.where)}" if t.where else "")
        for t in definition.triggers
    ]
    lines = [summary, "", "Steps:"]
    lines += [f"{i}. {t.step} ({t.plugin}) {t.text}" for i, t in enumerate(steps, 1)]
    for title, items in (
        ("Inputs", inputs),
        ("Outputs", outputs),
        ("Schedules", schedule_texts or ["none: it runs when asked (or by its event triggers)"]),
        ("Deployments", deployment_texts or ["none"]),
        ("Event triggers", triggers),
    ):
        if items:
            lines += ["", f"{title}:", *(f"- {item}" for item in items)]
    if definition.timeout:
        lines += ["", f"A run is timed out after {definition.timeout:g} seconds."]
    return Description(
        summary,
        steps,
        inputs,
        outputs,
        schedule_texts,
        deployment_texts,
        triggers,
        "\n".join(lines),
    )


def _step(step: StepSpec, spec: PluginSpec | None) -> str:
    config = step.config
    text = _what(step, spec, config)
    if step.depends_on:
        text += f", after {_and(step.depends_on)}"
    if step.retries:
        times = _count(step.retries, "time")
        text += f"; retried up to {times} ({step.retry_delay:g}s apart, doubling)"
    if step.timeout:
        text += f"; an attempt may take {step.timeout:g}s"
    return text + "."


def _what(step: StepSpec, spec: PluginSpec | None, config: Mapping[str, Any]) -> str:
    if spec is None:
        return f"uses the plugin {step.plugin}, which is not installed"
    url = takes_url(spec)
    where = _value(spec, url.name, config.get(url.name)) if url is not None else None
    fmt = config.get("format") or (spec.field("format").default if spec.field("format") else None)
    if spec.role == "source" and "path" in config:
        return f"reads {fmt or ''} records from the file {config['path']}".replace("  ", " ")
    if spec.role == "source" and where:
        return f"reads records from {where} ({spec.entry.description.rstrip('.')})"
    if spec.role == "sink" and "path" in config:
        mode = config.get("mode", "overwrite")
        return f"writes the records to the file {config['path']} ({fmt}, {mode})"
    if spec.role == "sink" and where:
        return f"sends the records to {where} ({spec.entry.description.rstrip('.')})"
    if spec.field("aggregates") is not None and isinstance(config.get("aggregates"), dict):
        parts = [f"{name} = {_aggregate(text)}" for name, text in config["aggregates"].items()]
        groups = config.get("group_by") or []
        by = f"groups the records by {_and(groups)}" if groups else "takes all records as one group"
        return f"{by} and computes {_and(parts)}"
    if spec.field("expression") is not None and isinstance(config.get("expression"), str):
        return f"keeps only the records for which `{config['expression']}` is true"
    if spec.field("fields") is not None and (config.get("fields") or config.get("drop")):
        parts = [f"sets {k} to `{v}`" for k, v in (config.get("fields") or {}).items()]
        if config.get("drop"):
            parts.append(f"drops {_and(config['drop'])}")
        return _and(parts)
    shown = [f"{k}: {_value(spec, k, v)}" for k, v in sorted(config.items())]
    about = spec.entry.description.rstrip(".") or spec.ref
    return f"{about[0].lower()}{about[1:]}" + (f" ({'; '.join(shown)})" if shown else "")


def _value(spec: PluginSpec, key: str, value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"secret"}:
        return f"the secret {value['secret']!r}"
    if key in spec.entry.credentials or key in spec.entry.credential_keys:
        return "(hidden)"
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    if isinstance(value, list):
        return _and([str(v) for v in value])
    return str(value)


def _aggregate(text: str) -> str:
    function, _, field = text.partition(":")
    names = {"count": "the count of", "sum": "the sum of", "avg": "the average of",
             "min": "the least", "max": "the greatest"}  # fmt: skip
    if not field:
        return "the number of records"
    return f"{names.get(function, function)} {field}"


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in sorted(values.items()))


def _and(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
