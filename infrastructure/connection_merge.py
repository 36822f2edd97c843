"""A step's `connection` filling in what the step's config leaves out (README
"Connections"). Pure: the caller looks the connection up in the step's tenant
(ConnectionService.config_of) and validates the merged config as any step config, so
a field a connection fills in is checked exactly as if the step had written it.

Rules: the step's fields win; a dict field (`headers`) merges key by key, the step's
keys winning, header names compared case-insensitively. An http connection's
`base_url` becomes the step's `url`: taken as it is by a step without `url`, and
prefixed to a relative one (no `scheme://`), so a relative url never leaves the
connection's host. Secret references pass through unresolved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.connection import ConnectionConfig
from infrastructure.connectors import CONNECTORS

_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CASE_INSENSITIVE_KEYS = frozenset({"headers"})


@dataclass(frozen=True)
class Merged:
    """The config to validate and run; or, when `problems` is not empty, why the
    connection cannot serve the step ("connection: ..." or "config.<field>: ...")."""

    config: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def merge_connection(
    plugin: str, step_config: Mapping[str, Any], name: str, found: ConnectionConfig | None
) -> Merged:
    """The step's config over connection `name` (None: the tenant has no live connection
    of that name), for a step of `plugin` (Type.name)."""
    if found is None:
        return _refused(
            f"connection: no connection named {name!r} (POST /api/v1/connections creates one)"
        )
    connector = CONNECTORS.get(found.type)
    if connector is None:
        return _refused(f"connection: {name!r} is of type {found.type!r}, unknown to this server")
    if plugin not in connector.serves:
        return _refused(
            f"connection: a {found.type} connection cannot serve {plugin}"
            f" (it serves {', '.join(connector.serves)})"
        )
    base = dict(found.config)
    base_url = base.pop("base_url", None) if found.type == "http" else None
    merged = _merge_fields(base, step_config)
    if base_url is not None:
        problem = _place_url(merged, base_url)
        if problem:
            return _refused(problem)
    return Merged(merged)


def _merge_fields(base: dict[str, Any], step: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in step.items():
        under = merged.get(key)
        if isinstance(value, dict) and isinstance(under, dict):
            merged[key] = _merge_dict(under, value, casefold=key in _CASE_INSENSITIVE_KEYS)
        else:
            merged[key] = value
    return merged


def _merge_dict(base: dict[str, Any], step: dict[str, Any], *, casefold: bool) -> dict[str, Any]:
    def norm(key: str) -> str:
        return key.lower() if casefold else key

    overridden = {norm(key) for key in step}
    kept = {key: value for key, value in base.items() if norm(key) not in overridden}
    return {**kept, **step}


def _place_url(merged: dict[str, Any], base_url: Any) -> str | None:
    url = merged.get("url")
    if url is None:
        merged["url"] = base_url
    elif isinstance(url, str) and not _ABSOLUTE.match(url):
        merged["url"] = join_url(str(base_url), url)
    elif not isinstance(url, str):
        return "config.url: a URL, absolute or relative to the connection's base_url"
    return None


def join_url(base_url: str, relative: str) -> str:
    """`relative` appended to `base_url` (one '/' between them; a query or fragment
    appended as is). Not RFC 3986 resolution, which would drop the base's last path
    segment ("v1" of https://api/v1 + "items"): a base URL is a prefix here."""
    if not relative or relative.startswith(("?", "#")):
        return base_url + relative
    return base_url.rstrip("/") + "/" + relative.lstrip("/")


def _refused(problem: str) -> Merged:
    return Merged({}, (problem,))
