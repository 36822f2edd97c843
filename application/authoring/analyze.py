"""Findings about a pipeline (POST /pipelines/{id}:analyze), each with its severity, the
step it concerns, a stable code and a suggested change, plus figures from its run
history. Codes (README "Authoring help"):

- network-no-retries, network-no-timeout: a step that reaches the network (its plugin
  names destinations) with retries 0, or without a step timeout;
- unbounded-read: a network source whose config offers no bound on what it reads
  (warning), or whose bound is set to the most the plugin allows (info);
- unknown-field: an expression, aggregate or group_by reads a field that no upstream
  step can produce (after an aggregation only its groups and results exist; a transform
  may have dropped it);
- plain-credential: a credential field (x-norn-secret: required, or a sensitive header)
  holding a plain value instead of a secret reference; possible-credential: a field
  named like one (password, token, api_key, ...) with a plain value, or a URL carrying
  a password;
- filter-never-passes / unreachable-step: a filter whose expression reads no field and
  is false, and every step after it, which can then never receive a record;
- never-run, failing-step: from the last runs' history, a step that never ran
  (skipped each time) or fails in at least a fifth of its executions.
Values are never quoted: a finding names where a value is, not what it is."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from application.authoring.flow import Fields, downstream, expressions, produced, reads, run_order
from application.authoring.history import RunHistory, history_figures
from application.authoring.plugins import PluginSpec
from application.authoring.ports import AuthoringCatalog
from domain.pipeline import PipelineDefinition

SEVERITIES = ("error", "warning", "info")
BOUNDS = ("max_bytes", "max_records", "max_rows", "max_size", "limit")
CREDENTIAL_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|secret|token|api_?key|apikey|credentials?|private_?key)$", re.I
)


@dataclass(frozen=True)
class Finding:
    severity: str
    step: str | None
    code: str
    message: str
    suggestion: str


@dataclass(frozen=True)
class Analysis:
    findings: list[Finding]
    figures: dict[str, Any]


def analyze(
    definition: PipelineDefinition,
    specs: Sequence[PluginSpec],
    catalog: AuthoringCatalog,
    history: RunHistory | None = None,
) -> Analysis:
    by_ref = {s.ref: s for s in specs}
    findings: list[Finding] = []
    for step in definition.steps:
        spec = by_ref.get(step.plugin)
        if spec is None:
            findings.append(
                Finding(
                    "error",
                    step.name,
                    "unknown-plugin",
                    f"plugin {step.plugin} is not installed",
                    "install it where Norn runs, or choose one of GET /api/v1/plugins",
                )
            )
            continue
        findings.extend(_network(step.name, step.retries, step.timeout, step.config, spec))
        findings.extend(_credentials(step.name, step.config, spec))
    findings.extend(_unknown_fields(definition, by_ref, catalog))
    findings.extend(_unreachable(definition, by_ref, catalog))
    figures = history_figures(definition, history)
    findings.extend(_history(definition, history))
    order = {s.name: i for i, s in enumerate(definition.steps)}
    findings.sort(
        key=lambda f: (SEVERITIES.index(f.severity), order.get(f.step or "", -1), f.code, f.message)
    )
    return Analysis(findings, figures)


def _network(
    name: str, retries: int, timeout: float | None, config: Mapping[str, Any], spec: PluginSpec
) -> list[Finding]:
    if not spec.entry.network:
        return []
    out = []
    if retries == 0:
        out.append(
            Finding(
                "warning",
                name,
                "network-no-retries",
                f"step {name} reaches the network ({spec.ref}) and is not retried",
                "set retries (e.g. 3) and retry_delay: timeouts, 5xx, 408 and 429 "
                "are often gone on the next attempt",
            )
        )
    if timeout is None:
        out.append(
            Finding(
                "warning",
                name,
                "network-no-timeout",
                f"step {name} reaches the network and no timeout bounds an attempt",
                "set the step's timeout (seconds an attempt may run, e.g. 300): a "
                "server that keeps answering slowly can hold the run otherwise",
            )
        )
    if spec.role == "source":
        bound = next((spec.field(b) for b in BOUNDS if spec.field(b) is not None), None)
        if bound is None:
            out.append(
                Finding(
                    "warning",
                    name,
                    "unbounded-read",
                    f"{spec.ref} offers no bound on how much step {name} reads",
                    "prefer a plugin with a size bound (Input.http has max_bytes), or "
                    "set a step timeout to bound it in time",
                )
            )
        elif bound.maximum is not None and config.get(bound.name) == bound.maximum:
            out.append(
                Finding(
                    "info",
                    name,
                    "unbounded-read",
                    f"step {name} sets {bound.name} to the most {spec.ref} allows",
                    f"lower {bound.name} to what the source really sends",
                )
            )
    return out


def _credentials(name: str, config: Mapping[str, Any], spec: PluginSpec) -> list[Finding]:
    out = []
    for key in sorted(spec.entry.credentials):
        if isinstance(config.get(key), str):
            out.append(_plain(name, f"config.{key}", "error", "plain-credential"))
    for key, sensitive in sorted(spec.entry.credential_keys.items()):
        values = config.get(key)
        if isinstance(values, dict):
            for header in sorted(values):
                if header.lower() in sensitive and isinstance(values[header], str):
                    out.append(_plain(name, f"config.{key}.{header}", "error", "plain-credential"))
    marked = set(spec.entry.credentials)
    for key in sorted(config):
        value = config[key]
        if key not in marked and CREDENTIAL_NAME.search(key) and isinstance(value, str) and value:
            out.append(_plain(name, f"config.{key}", "warning", "possible-credential"))
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            if urlsplit(value).password:
                out.append(_plain(name, f"config.{key}", "warning", "possible-credential"))
    return out


def _plain(step: str, where: str, severity: str, code: str) -> Finding:
    return Finding(
        severity,
        step,
        code,
        f"step {step}: {where} holds a plain value where a credential belongs",
        'store it as a secret (POST /api/v1/secrets) and give {"secret": "<name>"} instead; '
        "then rotate the value, which has been stored in the pipeline's history",
    )


def _unknown_fields(
    definition: PipelineDefinition, by_ref: Mapping[str, PluginSpec], catalog: AuthoringCatalog
) -> list[Finding]:
    out: list[Finding] = []
    made: dict[str, Fields] = {}
    for step in run_order(definition):
        spec = by_ref.get(step.plugin)
        before = [made[d] for d in step.depends_on if d in made]
        incoming = Fields(
            any(f.open for f in before) if before else True,
            set().union(*(f.known for f in before)) if before else set(),
            next((f.made_by for f in before if f.made_by), None),
        )
        for f in before:
            incoming.dropped.update(f.dropped)
        if before and spec is not None and spec.role != "source":
            for where, names in sorted(reads(spec, step.config, catalog).items()):
                for missing in sorted(n for n in names if _absent(n, incoming)):
                    out.append(_unknown(step.name, where, missing, incoming))
        made[step.name] = produced(spec, step, before)
    return out


def _absent(name: str, fields: Fields) -> bool:
    if name in fields.known:
        return False
    return name in fields.dropped or not fields.open


def _unknown(step: str, where: str, name: str, fields: Fields) -> Finding:
    if name in fields.dropped:
        why = f"step {fields.dropped[name]} drops it"
    else:
        have = ", ".join(sorted(fields.known)) or "none"
        why = f"after step {fields.made_by} the records have only: {have}"
    return Finding(
        "error",
        step,
        "unknown-field",
        f"step {step}: {where} reads the field {name!r}, which no upstream step produces ({why})",
        f"read one of the fields the upstream steps produce, or produce {name!r} upstream "
        "(a transform's fields, an aggregate's group_by or results)",
    )


def _unreachable(
    definition: PipelineDefinition, by_ref: Mapping[str, PluginSpec], catalog: AuthoringCatalog
) -> list[Finding]:
    out: list[Finding] = []
    for step in definition.steps:
        text = expressions(by_ref.get(step.plugin), step.config).get("config.expression")
        if text is None or by_ref[step.plugin].field("fields") is not None:
            continue
        facts = catalog.expression(text)
        if facts.problem is None and facts.constant and not facts.value:
            out.append(
                Finding(
                    "warning",
                    step.name,
                    "filter-never-passes",
                    f"step {step.name}'s expression reads no field and is false: "
                    "it passes no record",
                    "fix the condition, or remove the step and what follows it",
                )
            )
            for after in downstream(definition, step.name):
                out.append(
                    Finding(
                        "warning",
                        after,
                        "unreachable-step",
                        f"step {after} can never receive a record: it runs after "
                        f"step {step.name}, which passes none",
                        f"fix step {step.name}'s condition, or remove step {after}",
                    )
                )
    return out


def _history(definition: PipelineDefinition, history: RunHistory | None) -> list[Finding]:
    if history is None:
        return []
    out = []
    steps = {s.step: s for s in history.steps}
    for step in definition.steps:
        seen = steps.get(step.name)
        if seen is None:
            continue
        if seen.runs >= 3 and seen.executed == 0:
            out.append(
                Finding(
                    "warning",
                    step.name,
                    "never-run",
                    f"step {step.name} did not run in any of the last {seen.runs} "
                    "runs that included it",
                    "look at the steps before it: one of them fails or the run is "
                    "cancelled before it",
                )
            )
        elif seen.executed >= 3 and seen.failed / seen.executed >= 0.2:
            rate = round(100 * seen.failed / seen.executed)
            out.append(
                Finding(
                    "warning",
                    step.name,
                    "failing-step",
                    f"step {step.name} failed in {seen.failed} of its last "
                    f"{seen.executed} executions ({rate}%)",
                    "read its errors (GET /api/v1/runs/{id}); if they are transient, set retries",
                )
            )
    return out
