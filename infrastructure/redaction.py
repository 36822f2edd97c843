"""Credentials stored in clear before secret references existed never shown again
(README "Secrets in step configs").

A step config may still hold a credential as a plain string where its plugin marks a
credential field (infrastructure/plugins/sensitive.py): a webhook's `secret`, an
`Authorization` header. Such a value is in the events of the pipeline and of its runs.
Whatever leaves the store (CloudEvents: NATS, SSE, WebSocket, webhooks, audit, exports,
the read models built from them) and every view of a definition passes through
`redact_steps`, which puts `{"redacted": true}` in its place. The stored value keeps
working for runs until the pipeline is revised, or until a platform admin shreds it
(infrastructure/shredding.py).

Which fields are credentials is known from the plugins registered in this process;
for a plugin not installed here, fields with a credential's name and the sensitive
headers are taken as credentials.
"""

from __future__ import annotations

from typing import Any

from infrastructure.plugins.base import Plugin
from infrastructure.plugins.builtin import BUILTIN_PLUGINS
from infrastructure.plugins.sensitive import SENSITIVE_HEADERS, Secrecy, secrecy_of
from infrastructure.secret_references import REDACTED, Path, replace_at, walk

_CREDENTIAL_NAMES = frozenset(
    {
        "secret",
        "password",
        "passwd",
        "token",
        "api_key",
        "apikey",
        "access_token",
        "client_secret",
        "private_key",
    }
)
UNKNOWN_PLUGIN = Secrecy(
    required=_CREDENTIAL_NAMES,
    accepted=_CREDENTIAL_NAMES,
    keyed={"headers": SENSITIVE_HEADERS},
)
_SECRECY: dict[str, Secrecy] = {}


def register(plugin: type[Plugin]) -> None:
    """Called for every plugin a catalog registers: its marks are known from then on."""
    _SECRECY[plugin.ref()] = secrecy_of(plugin.Config)


for _builtin in BUILTIN_PLUGINS:
    register(_builtin)


def secrecy_for(plugin_ref: str) -> Secrecy:
    return _SECRECY.get(plugin_ref, UNKNOWN_PLUGIN)


def plain_credentials(step: dict[str, Any]) -> dict[Path, str]:
    """The credentials a step config holds in clear, by path."""
    config = step.get("config")
    if not isinstance(config, dict) or not config:
        return {}
    secrecy = secrecy_for(str(step.get("plugin", "")))
    return {
        path: value
        for path, value in walk(config)
        if isinstance(value, str) and value and secrecy.requires(path)
    }


def redact_steps(steps: list[Any]) -> tuple[list[Any], list[str]]:
    """The steps (dicts, as in an event or a read model row) with credentials in clear
    replaced by the redaction mark, and the values replaced (for the shredder). The
    steps are returned as they are, not copied, when none holds one."""
    found: list[str] = []
    redacted = []
    for step in steps:
        plain = plain_credentials(step) if isinstance(step, dict) else {}
        if plain:
            found.extend(plain.values())
            step = {
                **step,
                "config": replace_at(step["config"], {p: dict(REDACTED) for p in plain}),
            }
        redacted.append(step)
    return (redacted if found else steps), found


def redact_data(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data with its definition's credentials redacted (as is without one)."""
    definition = data.get("definition")
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), list):
        return data
    steps, found = redact_steps(definition["steps"])
    if not found:
        return data
    return {**data, "definition": {**definition, "steps": steps}}
