"""The installed plugins as authoring sees them: each config field read off its JSON
schema, each plugin's role (Input: source, Output: sink, other types: processing) and
the words it answers to (its name, declared keywords and description). Nothing here
knows a plugin by name: a third-party plugin that describes itself is found the same
way as a built-in one."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from application.authoring.ports import PluginEntry

STOPWORDS = frozenset(
    "a an the of to from in into on at by for with and or as is are be it its them they"
    " this that these those each every all any some one records record rows row data"
    " file files field fields value values then also only not no if when per using via"
    " e g eg i me my we our you your".split()
)


def stem(word: str) -> str:
    """A crude stem, the same on both sides of a comparison: keeping -> keep."""
    word = word.lower()
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z0-9]*", text.lower())


@dataclass(frozen=True)
class ConfigField:
    name: str
    kind: str
    """string, integer, number, boolean, object, array or enum (anything else: any)."""
    required: bool
    default: Any = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    maximum: float | None = None
    items: str | None = None
    """An array's or object's item kind."""


@dataclass(frozen=True)
class PluginSpec:
    entry: PluginEntry
    fields: tuple[ConfigField, ...]

    @property
    def ref(self) -> str:
        return self.entry.ref

    @property
    def type(self) -> str:
        return self.ref.partition(".")[0]

    @property
    def name(self) -> str:
        return self.ref.partition(".")[2]

    @property
    def role(self) -> str:
        return {"Input": "source", "Output": "sink"}.get(self.type, "process")

    def field(self, name: str) -> ConfigField | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def required(self) -> list[ConfigField]:
        return [f for f in self.fields if f.required]

    def score(self, clause_words: Iterable[str]) -> int:
        """How well a phrase's words name this plugin: its name counts most, then its
        declared keywords, then its description's words."""
        name = {stem(w) for w in words(self.name.replace("_", " "))}
        keywords = {stem(w) for k in self.entry.keywords for w in words(k)}
        described = {stem(w) for w in words(self.entry.description)} - {stem(w) for w in STOPWORDS}
        total = 0
        for word in {stem(w) for w in clause_words}:
            total += 3 if word in name else 2 if word in keywords else 1 if word in described else 0
        return total


def specs_of(entries: Sequence[PluginEntry]) -> list[PluginSpec]:
    return sorted((PluginSpec(e, config_fields(e.schema)) for e in entries), key=lambda s: s.ref)


def config_fields(schema: Mapping[str, Any]) -> tuple[ConfigField, ...]:
    body = _resolve(schema, schema)
    required = set(body.get("required", ()))
    out = []
    for name, prop in sorted(body.get("properties", {}).items()):
        prop = _resolve(schema, prop)
        kind, enum, pattern, maximum, items = _kind(schema, prop)
        out.append(
            ConfigField(
                name=name,
                kind=kind,
                required=name in required,
                default=prop.get("default"),
                enum=enum,
                pattern=pattern,
                maximum=maximum,
                items=items,
            )
        )
    return tuple(out)


def _resolve(root: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        merged = dict(target)
        merged.update({k: v for k, v in node.items() if k != "$ref"})
        return merged
    return node


def _kind(
    root: Mapping[str, Any], prop: Mapping[str, Any]
) -> tuple[str, tuple[str, ...], str | None, float | None, str | None]:
    options = [_resolve(root, o) for o in prop.get("anyOf", ())]
    options = [o for o in options if o.get("type") != "null"] or [prop]
    chosen = options[0]
    if "enum" in chosen:
        return "enum", tuple(str(v) for v in chosen["enum"]), None, None, None
    kind = chosen.get("type", "any")
    if not isinstance(kind, str):
        kind = "any"
    items = None
    if kind == "array":
        items = _resolve(root, chosen.get("items", {})).get("type")
    elif kind == "object":
        extra = chosen.get("additionalProperties")
        items = _resolve(root, extra).get("type") if isinstance(extra, Mapping) else None
    maximum = chosen.get("maximum")
    return kind, (), chosen.get("pattern"), maximum, items if isinstance(items, str) else None


def takes_url(spec: PluginSpec) -> ConfigField | None:
    """The field a URL goes in: `url`, or a string whose pattern asks for http(s)."""
    found = spec.field("url")
    if found is not None:
        return found
    return next((f for f in spec.fields if f.pattern and "http" in f.pattern), None)


def formats(spec: PluginSpec) -> tuple[str, ...]:
    found = spec.field("format")
    return found.enum if found is not None else ()
