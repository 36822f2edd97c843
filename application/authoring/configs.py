"""A step's config filled from a phrase and the plugin's schema alone: a path, a URL, a
format, a table, a query, lists of fields and numbers whose field names the phrase
uses, and the answers given as hints. What a required field still lacks becomes a
question naming the hint that answers it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from application.authoring.phrases import EXTENSION_FORMAT, QUOTED, Target, field_list
from application.authoring.plugins import STOPWORDS, ConfigField, PluginSpec, stem, takes_url, words
from application.authoring.ports import Question


def fill(
    spec: PluginSpec,
    step: str,
    phrase: str,
    target: Target | None,
    hints: Mapping[str, str],
    given: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Question], list[str]]:
    """(config, questions, assumptions). `given` holds what the caller already decided
    (an expression, aggregates)."""
    config: dict[str, Any] = dict(given or {})
    questions: list[Question] = []
    assumptions: list[str] = []
    url_field = takes_url(spec)
    for f in spec.fields:
        key = f"{step}.{f.name}"
        if key in hints:
            value, problem = hint_value(f, hints[key])
            if problem:
                questions.append(Question(key, f"hint {key}: {problem}"))
            else:
                config[f.name] = value
            continue
        if f.name in config:
            continue
        if f.name == "format" and target is not None and target.extension:
            wanted = EXTENSION_FORMAT.get(target.extension)
            if wanted in f.enum:
                if wanted != f.default:  # the default needs no saying
                    config[f.name] = wanted
                continue
            questions.append(
                Question(
                    key,
                    f"{spec.ref} reads and writes {', '.join(f.enum)}, not .{target.extension}: "
                    f"which format is {target.text}?",
                )
            )
            continue
        value = _from_phrase(spec, f, phrase, target, url_field)
        if value is not None:
            config[f.name] = value
        elif f.required:
            questions.append(Question(key, _ask(spec, f, step)))
    return config, questions, assumptions


def _from_phrase(
    spec: PluginSpec,
    f: ConfigField,
    phrase: str,
    target: Target | None,
    url_field: ConfigField | None,
) -> Any:
    lowered = phrase.lower()
    if target is not None and target.kind == "file" and f.name == "path":
        return target.text
    if target is not None and target.kind == "url" and f is url_field:
        return target.text
    if f.kind == "enum" and f.name == "mode" and "append" in f.enum and "append" in lowered:
        return "append"
    if f.name in ("table", "table_name") and target is not None and target.table:
        return target.table
    if f.name in ("query", "sql"):
        quoted = QUOTED.search(phrase)
        if quoted:
            return quoted.group(0)[1:-1]
        select = re.search(r"\bselect\b.+", phrase, re.I)
        return select.group(0) if select else None
    if f.required and f.kind == "array" and f.items == "string" and spec.role == "process":
        names = _named_fields(spec, phrase)
        return names or None
    if f.kind in ("integer", "number") and not f.required:
        return _number_for(f, phrase)
    return None


def _named_fields(spec: PluginSpec, phrase: str) -> list[str]:
    """The fields a processing phrase names: `mask card and iban` -> [card, iban]."""
    plugin_words = {stem(w) for w in words(spec.name.replace("_", " "))} | {
        stem(w) for k in spec.entry.keywords for w in words(k)
    }
    tokens = phrase.split()
    while tokens and stem(tokens[0].lower().strip(",")) in plugin_words | {"the"}:
        tokens = tokens[1:]
    text = " ".join(tokens)
    text = re.split(r"\b(?:keeping|keep|leaving|with|using|except|but|to|into|at|in|on)\b", text)[0]
    return [n for n in field_list(text) if n.lower() not in STOPWORDS]


def _number_for(f: ConfigField, phrase: str) -> int | float | None:
    """A number the phrase puts next to the words of the field's name (`keeping the last
    4` for keep_last)."""
    name_words = {stem(w) for w in words(f.name.replace("_", " "))}
    tokens = re.findall(r"[A-Za-z]+|-?\d+(?:\.\d+)?", phrase)
    for i, token in enumerate(tokens):
        if not re.fullmatch(r"-?\d+(?:\.\d+)?", token):
            continue
        near = {stem(t.lower()) for t in tokens[max(0, i - 3) : i + 3] if t.isalpha()}
        if name_words and name_words <= near:
            return int(token) if f.kind == "integer" and "." not in token else float(token)
    return None


def _ask(spec: PluginSpec, f: ConfigField, step: str) -> str:
    if f.name in spec.entry.credentials:
        return (
            f"Which secret holds {f.name} for step {step} ({spec.ref})? A credential is given "
            'as a secret reference: {"secret": "<name>"}.'
        )
    options = f" (one of {', '.join(f.enum)})" if f.enum else ""
    return f"What is {f.name} of step {step} ({spec.ref}, {f.kind}){options}?"


def hint_value(f: ConfigField, raw: str) -> tuple[Any, str | None]:
    """A hint's text as the field's type: JSON for objects, arrays, numbers and booleans
    (and a secret reference), else the text itself."""
    text = raw.strip()
    if text.startswith("{") or f.kind in ("object", "array", "integer", "number", "boolean"):
        try:
            return json.loads(text), None
        except ValueError:
            if f.kind == "array":
                return field_list(text), None
            return None, f"{f.name} takes {f.kind} (JSON), not {raw!r}"
    if f.enum and text not in f.enum:
        return None, f"{f.name} is one of {', '.join(f.enum)}"
    return text, None
