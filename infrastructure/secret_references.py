"""Secret references in step configs (README "Secrets in step configs").

A config value `{"secret": "<name>"}` or `{"secret": "<name>", "version": n}` names a
tenant secret. It may stand where the plugin's schema marks a field as taking one
(infrastructure/plugins/sensitive.py); a credential field takes nothing else in a new
write. The reference is what the events keep; the value is looked up only where the
step runs (`resolve`), and every log line and error of that step is masked with it.

`{"redacted": true}` stands where a credential was stored in clear before secrets
existed: read models, feeds and exports show that instead of the value
(infrastructure/redaction.py), and a step meeting it fails rather than sign or
authenticate with a placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from application.ports import SecretFacts
from domain.pipeline import STEP_NAME
from infrastructure.plugins.sensitive import Secrecy

Path = tuple[str | int, ...]
"""Where a value is in a config: field names, dict keys and list indexes."""
REFERENCE_SHAPE = '{"secret": "<name>"} or {"secret": "<name>", "version": <n>}'

REDACTED: dict[str, Any] = {"redacted": True}
PLACEHOLDER = "secret-reference"
"""What a reference is checked as against the schema at save time."""
MASK = "***"
MIN_MASKED = 3
"""Shorter values are not masked in text: "a" would blank every word."""
_SECRETS_HELP = '{"secret": "<name>"} (POST /api/v1/secrets creates one)'


@dataclass(frozen=True)
class SecretReference:
    path: Path
    """Where in the config: ("password",) or ("headers", "Authorization")."""
    name: str
    version: int | None = None

    @property
    def where(self) -> str:
        return dotted(self.path)


def dotted(path: Path, prefix: str = "config") -> str:
    """`config.headers.Authorization`, `config.items[0]`: a path as errors name fields."""
    text = prefix
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def looks_like_reference(value: Any) -> bool:
    """A JSON object with a `secret` key: meant as a reference, well-formed or not."""
    return isinstance(value, dict) and "secret" in value


def is_reference(value: Any) -> bool:
    """Exactly `{"secret": name}` or `{"secret": name, "version": n}`: a valid secret
    name and a version of at least 1 (a JSON true is no version)."""
    if not isinstance(value, dict) or not value.keys() <= {"secret", "version"}:
        return False
    name, version = value.get("secret"), value.get("version", 1)
    if not isinstance(name, str) or not STEP_NAME.fullmatch(name):
        return False
    return type(version) is int and version >= 1


def is_redacted(value: Any) -> bool:
    return isinstance(value, dict) and value == REDACTED


def _leaf(value: dict[str, Any]) -> bool:
    """A reference, a redaction, or what is meant as a reference but malformed."""
    return is_redacted(value) or (
        looks_like_reference(value) and value.keys() <= {"secret", "version"}
    )


def walk(config: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every value of a config with its path, references and redactions as leaves. The
    config itself is fields, never a reference (Output.webhook has a field `secret`)."""
    if isinstance(config, dict) and not (path and _leaf(config)):
        for key, value in config.items():
            yield from walk(value, (*path, str(key)))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from walk(value, (*path, i))
    elif path:
        yield path, config


def find_references(config: dict[str, Any]) -> list[SecretReference]:
    """Every well-formed reference in a config's fields, at any depth, in order."""
    return [
        SecretReference(path, value["secret"], value.get("version"))
        for path, value in walk(config)
        if is_reference(value)
    ]


def malformed_references(config: dict[str, Any]) -> list[Path]:
    """Where a config's fields hold an object with a `secret` key that is no valid
    reference (an extra key, a bad name or version): meant as one, so the caller says
    what a reference looks like instead of a schema's 'expected str'."""
    found: list[Path] = []

    def look(value: Any, path: Path) -> None:
        if is_reference(value):
            return
        if looks_like_reference(value):
            found.append(path)
        elif isinstance(value, dict):
            for key, inner in value.items():
                look(inner, (*path, key))
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                look(inner, (*path, index))

    for key, value in config.items():
        look(value, (key,))
    return found


def substitute(config: dict[str, Any], placeholder: str = PLACEHOLDER) -> dict[str, Any]:
    """A copy of a config with every reference in its fields replaced by `placeholder`."""
    return replace_at(config, {r.path: placeholder for r in find_references(config)})


def has_secret_values(config: Any) -> bool:
    """Whether any value is a reference or a redaction (the common case is none)."""
    return any(is_reference(v) or is_redacted(v) for _, v in walk(config))


def replace_at(config: dict[str, Any], values: dict[Path, Any]) -> dict[str, Any]:
    """A copy of `config` with the values at the given paths replaced."""

    def rebuild(node: Any, path: Path) -> Any:
        if path in values:
            return values[path]
        if isinstance(node, dict) and not (path and _leaf(node)):
            return {k: rebuild(v, (*path, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [rebuild(v, (*path, i)) for i, v in enumerate(node)]
        return node

    return rebuild(config, ())


def reference_problems(config: dict[str, Any], secrecy: Secrecy, *, new_write: bool) -> list[str]:
    """Where references and credentials are misplaced: a reference in a field that takes
    none, a credential given in clear (refused in a new write only: a stored pipeline
    keeps running until it is revised), a redacted value."""
    problems = []
    for path, value in walk(config):
        where = dotted(path)
        if is_reference(value):
            if not secrecy.accepts(path):
                problems.append(f"{where}: this field does not take a secret reference")
        elif is_redacted(value):
            problems.append(
                f"{where}: the value stored here was redacted; give a secret reference "
                + _SECRETS_HELP
            )
        elif looks_like_reference(value):
            problems.append(
                f'{where}: a secret reference is {{"secret": "<name>"}} with an optional'
                ' "version" of 1 or more, and nothing else'
            )
        elif new_write and isinstance(value, str) and secrecy.requires(path):
            problems.append(
                f"{where}: a credential must be a secret reference {_SECRETS_HELP},"
                " not a plain value"
            )
    return problems


def host_allowed(destination: str, allowed_hosts: tuple[str, ...]) -> bool:
    """`destination` is host or host:port; an allowed entry is a host or *.domain,
    optionally with a port, which the destination must then have."""
    host, port = _host_port(destination)
    for entry in allowed_hosts:
        entry_host, entry_port = _host_port(entry)
        if entry_port and entry_port != port:
            continue
        if entry_host.startswith("*."):
            if host.endswith(entry_host[1:]):
                return True
        elif host == entry_host:
            return True
    return False


def _host_port(text: str) -> tuple[str, str]:
    text = text.lower()
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if text.count(":") == 1:
        host, port = text.split(":")
        if port.isdigit():
            return host, port
    return text, ""


def usage_problems(
    reference: SecretReference,
    facts: SecretFacts | None,
    *,
    namespace: str | None,
    destinations: list[str],
) -> list[str]:
    """Whether the referenced secret exists (and the version), and may be used by a
    pipeline in `namespace` on a step sending to `destinations`."""
    where = reference.where
    if facts is None:
        return [f"{where}: the tenant has no secret {reference.name!r} (POST /api/v1/secrets)"]
    if reference.version is not None and reference.version > facts.value_version:
        return [
            f"{where}: secret {reference.name!r} has no version {reference.version}"
            f" (its newest is {facts.value_version})"
        ]
    problems = []
    if facts.namespaces and namespace not in facts.namespaces:
        problems.append(
            f"{where}: secret {reference.name!r} may be used only by pipelines in namespace(s)"
            f" {', '.join(facts.namespaces)}"
        )
    if facts.allowed_hosts:
        for host in destinations:
            if not host_allowed(host, facts.allowed_hosts):
                problems.append(
                    f"{where}: secret {reference.name!r} may be sent only to"
                    f" {', '.join(facts.allowed_hosts)}, not to {host}"
                )
    return problems


class Masker:
    """Replaces a step's resolved secret values in text (log lines, errors): each value
    as given, with its whitespace runs made single spaces, JSON-escaped or URL-encoded
    (as an error quoting it may have it), each of its words long enough to be secret on
    its own, and a piece of one of those at either end of the text (an error that quotes
    the start of a response body cuts a value quoted near its end)."""

    def __init__(self, values: list[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) >= MIN_MASKED:
                forms.update(_forms(value))
        # Longest first, so a value containing another is masked whole.
        self._values = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for value in self._values:
            text = _mask_cut_ends(text, value)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


SECRET_WORD = 8
"""A word of a value at least this long is masked on its own (the token of
"Bearer <token>"); shorter words ("Bearer") would blank ordinary text."""
CUT_PIECE = 6
"""A piece of a value at an end of the text is masked from this length (or half the
value, when shorter): shorter pieces give little away and would blank ordinary words."""


def _forms(value: str) -> set[str]:
    collapsed = " ".join(value.split())
    forms = {value, collapsed, json.dumps(value)[1:-1], quote(value, safe="")}
    forms.update(word for word in collapsed.split(" ") if len(word) >= SECRET_WORD)
    return {form for form in forms if len(form) >= MIN_MASKED}


def _mask_cut_ends(text: str, value: str) -> str:
    """`text` with a start of `value` that ends it, or an end of `value` that starts it,
    masked: the longest such piece at least CUT_PIECE long (or half of `value`)."""
    least = max(MIN_MASKED, min(CUT_PIECE, len(value) // 2))
    if len(value) <= least:
        return text
    at = text.find(value[0], max(0, len(text) - len(value) + 1))
    while at != -1:
        if len(text) - at >= least and value.startswith(text[at:]):
            text = text[:at] + MASK
            break
        at = text.find(value[0], at + 1)
    end = text.rfind(value[-1], 0, len(value) - 1)
    while end != -1:
        if end + 1 >= least and value.endswith(text[: end + 1]):
            return MASK + text[end + 1 :]
        end = text.rfind(value[-1], 0, end)
    return text
