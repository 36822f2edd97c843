"""Secret references in configs (README "Secrets in step configs"): a value written as
`{"secret": "<name>"}`, or `{"secret": "<name>", "version": n}` to pin a value version,
stands for the tenant's secret of that name. Configs hold references, never the values.

Here: recognising a reference, finding every one in a config with the path it is at,
and replacing them with a placeholder so a config can be checked against its schema
before anything is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.pipeline import STEP_NAME

Path = tuple[str | int, ...]
"""Where a value is in a config: field names, dict keys and list indexes."""

PLACEHOLDER = "secret-reference"
"""What a reference is checked as by a schema: a text any text field accepts."""

REFERENCE_SHAPE = '{"secret": "<name>"} or {"secret": "<name>", "version": <n>}'


@dataclass(frozen=True)
class SecretReference:
    path: Path
    name: str
    version: int | None = None


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
    return isinstance(version, int) and not isinstance(version, bool) and version >= 1


def reference_of(value: dict[str, Any], path: Path) -> SecretReference:
    """The reference `value` (which `is_reference`) stands for, at `path`."""
    return SecretReference(path, value["secret"], value.get("version"))


def find_references(config: dict[str, Any]) -> list[SecretReference]:
    """Every well-formed reference in a config's fields, at any depth, in document
    order. The config itself is fields, never a reference (Output.webhook has a field
    called `secret`)."""
    found: list[SecretReference] = []
    for key, value in config.items():
        _find(value, (key,), found)
    return found


def _find(value: Any, path: Path, found: list[SecretReference]) -> None:
    if is_reference(value):
        found.append(reference_of(value, path))
    elif isinstance(value, dict):
        for key, inner in value.items():
            _find(inner, (*path, key), found)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _find(inner, (*path, index), found)


def malformed_references(config: dict[str, Any]) -> list[Path]:
    """Where a config's fields hold an object with a `secret` key that is no valid
    reference (an extra key, a bad name or version): meant as one, so the caller says
    what a reference looks like instead of a schema's 'expected str'."""
    found: list[Path] = []
    for key, value in config.items():
        _malformed(value, (key,), found)
    return found


def _malformed(value: Any, path: Path, found: list[Path]) -> None:
    if is_reference(value):
        return
    if looks_like_reference(value):
        found.append(path)
    elif isinstance(value, dict):
        for key, inner in value.items():
            _malformed(inner, (*path, key), found)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _malformed(inner, (*path, index), found)


def substitute(config: dict[str, Any], placeholder: str = PLACEHOLDER) -> dict[str, Any]:
    """A copy of a config with every reference in its fields replaced by `placeholder`."""
    return {key: _substitute(value, placeholder) for key, value in config.items()}


def _substitute(value: Any, placeholder: str) -> Any:
    if is_reference(value):
        return placeholder
    if isinstance(value, dict):
        return {key: _substitute(inner, placeholder) for key, inner in value.items()}
    if isinstance(value, list):
        return [_substitute(inner, placeholder) for inner in value]
    return value


def dotted(path: Path, prefix: str = "config") -> str:
    """`config.headers.Authorization`, `config.items[0]`: a path as errors name fields."""
    text = prefix
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
