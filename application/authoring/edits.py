"""The instruction forms regenerate.py understands, each one edit of the draft."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from application.authoring import phrases as ph
from application.authoring.configs import hint_value
from application.authoring.editor import STEP_FIELDS, Editor

I = re.IGNORECASE  # noqa: E741 (short: every pattern takes it)
STEP = r"(?:the\s+)?(?:step\s+)?['\"]?(?P<step>[\w.-]+)['\"]?(?:\s+step)?"


def apply(editor: Editor, text: str) -> str:
    """Apply one instruction; LookupError saying why it cannot be."""
    if m := re.fullmatch(
        rf"(?:retry\s+|set\s+retries\s+(?:of|for)\s+){STEP}\s+(?:up\s+to\s+)?(?P<n>\d+)(?:\s+times)?",
        text,
        I,
    ):
        return _set_step(editor, m["step"], "retries", m["n"])
    if m := re.fullmatch(
        rf"(?:add|set)\s+(?:a\s+)?(?P<field>timeout|retries)\s+(?:of\s+)?(?P<v>[\d.]+)\s*(?:s|seconds|times)?\s+(?:to|on|for)\s+{STEP}",
        text,
        I,
    ):
        return _set_step(editor, m["step"], m["field"].lower(), m["v"])
    if m := re.fullmatch(
        rf"(?:change|set|make)\s+(?:the\s+)?(?P<field>[\w-]+)\s+(?:of|for|in)\s+{STEP}\s+(?:to|=)\s+(?P<v>.+)",
        text,
        I,
    ):
        return _set_field(editor, m["step"], m["field"], m["v"])
    if m := re.fullmatch(
        r"(?:change|set)\s+(?P<step>[\w-]+)\.(?P<field>[\w-]+)\s+(?:to|=)\s+(?P<v>.+)", text, I
    ):
        return _set_field(editor, m["step"], m["field"], m["v"])
    if m := re.fullmatch(
        r"rename\s+(?:the\s+)?step\s+(?P<old>[\w.-]+)\s+(?:to|as)\s+(?P<new>[\w.-]+)", text, I
    ):
        return _rename(editor, m["old"], m["new"])
    if m := re.fullmatch(rf"(?:remove|delete|drop)\s+{STEP}", text, I):
        if any(s.name == m["step"] for s in editor.steps) or not ph.transform(text):
            return editor.remove(editor.find(m["step"]))
    if m := re.fullmatch(
        r"(?:write|send|post|save|deliver|output)\s+(?:it\s+|them\s+|the\s+records\s+|the\s+results?\s+)?(?P<to>(?:to|into|in)\s+.+?)\s+instead(?:\s+of\s+(?P<old>.+))?",
        text,
        I,
    ):
        return _replace_sink(editor, f"write {m['to']}", m["old"])
    if m := re.fullmatch(
        r"(?:change|replace)\s+(?:the\s+)?(?:destination|output|sink)\s+(?:to|with)\s+(?P<to>.+)",
        text,
        I,
    ):
        return _replace_sink(editor, f"write to {m['to']}", None)
    if m := re.fullmatch(rf"(?:change|replace)\s+{STEP}\s+(?:to|with)\s+(?P<v>.+)", text, I):
        step = editor.find(m["step"])
        if editor.spec_of(step).field("expression") is not None:
            return _set_field(editor, step.name, "expression", m["v"])
    if m := re.fullmatch(
        r"(?:add|insert|also)\s+(?P<what>.+?)(?:\s+(?P<where>after|before)\s+" + STEP + r")?",
        text,
        I,
    ):
        anchor = editor.find(m["step"]) if m["step"] else None
        what = _clause(m["what"])
        made = editor.new_steps(what)
        return "; ".join(editor.insert(step, m["where"], anchor) for step in made)
    if ph.lead(text) in ph.WRITE_VERBS:  # "write to x.csv" (without instead): one more
        return "; ".join(editor.insert(step, None, None) for step in editor.new_steps(text))
    if ph.transform(text) is not None:  # "rename email to contact": a transform added
        return "; ".join(editor.insert(step, None, None) for step in editor.new_steps(text))
    raise LookupError(
        "not an instruction it knows (add, remove, change, set, write ... instead, rename step)"
    )


def _clause(what: str) -> str:
    """`a filter where x > 1` -> a clause the generator's phrases read."""
    what = re.sub(r"^(?:a|an|the|new|another)\s+", "", what.strip(), flags=I)
    what = re.sub(r"^(?:step|stage)\s+(?:that\s+|to\s+|which\s+)?", "", what, flags=I)
    if re.match(r"(?:a\s+)?(?:new\s+)?field\b", what, I):
        return f"add {what}"
    if m := re.match(r"(?:destination|output|sink)\s+(?:to\s+)?(?P<to>.+)", what, I):
        return f"write to {m['to']}"
    if m := re.match(r"(?:transform|transformation)\s+(?:that\s+|to\s+)?(?P<rest>.+)", what, I):
        return m["rest"]
    if m := re.match(r"(?:aggregation|aggregate)\s+(?:that\s+|to\s+|of\s+)?(?P<rest>.+)", what, I):
        return f"aggregate {m['rest']}"
    if re.match(r"(?:to|into)\s+", what, I) or ph.lead(what) in ph.WRITE_VERBS:
        return what if ph.lead(what) in ph.WRITE_VERBS else f"write {what}"
    return what


def _set_step(editor: Editor, name: str, field: str, raw: str) -> str:
    step = editor.find(name)
    try:
        value = STEP_FIELDS[field](raw)
    except ValueError:
        raise LookupError(f"{field} takes a number, not {raw!r}") from None
    editor.steps[editor.steps.index(step)] = msgspec.structs.replace(step, **{field: value})
    return f"set {field} of step {step.name} to {value}"


def _set_field(editor: Editor, name: str, field: str, raw: str) -> str:
    step = editor.find(name)
    field = {"condition": "expression", "filter": "expression", "url": "url"}.get(
        field.lower(), field
    )
    if field in STEP_FIELDS:
        return _set_step(editor, step.name, field, raw)
    spec = editor.spec_of(step)
    target = spec.field(field)
    if target is None:
        fields = ", ".join(f.name for f in spec.fields)
        raise LookupError(f"{spec.ref} has no config field {field!r} (it has {fields})")
    text = raw.strip()
    if field == "expression" and editor.catalog.expression(text).problem:
        text = ph.condition(text) or text
    if QUOTED := re.fullmatch(r"'([^']*)'|\"([^\"]*)\"", text):
        text = QUOTED[1] if QUOTED[1] is not None else QUOTED[2]
    value, problem = hint_value(target, text)
    if problem:
        raise LookupError(problem)
    config: dict[str, Any] = {**step.config, field: value}
    editor.steps[editor.steps.index(step)] = msgspec.structs.replace(step, config=config)
    return f"set config.{field} of step {step.name}"


def _rename(editor: Editor, old: str, new: str) -> str:
    step = editor.find(old)
    if any(s.name == new for s in editor.steps):
        raise LookupError(f"a step is already named {new!r}")
    editor.steps = [
        msgspec.structs.replace(
            s,
            name=new if s is step else s.name,
            depends_on=tuple(new if d == step.name else d for d in s.depends_on),
        )
        for s in editor.steps
    ]
    return f"renamed step {step.name} to {new}"


def _replace_sink(editor: Editor, clause: str, old: str | None) -> str:
    sink = editor.find(old or "destination")
    made = editor.new_steps(clause)
    if len(made) != 1:
        raise LookupError("name one destination")
    new = made[0]
    if new.plugin == sink.plugin:
        config = {**sink.config, **new.config}
        if "format" not in new.config:
            config.pop("format", None)  # the new file's own (default) format
        replaced = msgspec.structs.replace(sink, config=config)
    else:
        replaced = msgspec.structs.replace(new, name=sink.name, depends_on=sink.depends_on)
    editor.steps[editor.steps.index(sink)] = replaced
    return f"step {sink.name} now uses {replaced.plugin} with {_shown(replaced.config)}"


def _shown(config: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in sorted(config.items()) if isinstance(v, str | int | float)
    )
