"""A step's config made ready to run: secret references resolved to their values in
this process only, the secrets' limits checked against where the step sends data,
and a Masker for every text the step produces (README "Secrets in step configs").

The resolved config lives in the plugin's Config object for the attempt and nowhere
else: not in an event, a log line, an error, or the step's output file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from application.errors import NotFound, StepFailed
from application.ports import ConnectionLookup, SecretFacts, SecretLookup, StepCall
from domain.errors import Conflict
from infrastructure import secret_references as refs
from infrastructure.connection_merge import merge_connection
from infrastructure.plugins.base import Plugin


async def prepare(
    plugin_class: type[Plugin],
    call: StepCall,
    secrets: SecretLookup | None,
    connections: ConnectionLookup | None = None,
) -> tuple[Any, refs.Masker]:
    """The parsed Config (over the step's connection's, as it is now) and the masker of
    the values put in it; StepFailed (not retryable) when it cannot run as stored."""
    raw = call.step.config
    if call.step.connection is not None:
        raw = await _over_connection(plugin_class, call, connections)
    if not refs.has_secret_values(raw):
        return _parse(plugin_class, raw, refs.Masker([])), refs.Masker([])
    for path, value in refs.walk(raw):
        if refs.is_redacted(value):
            raise StepFailed(
                f"config.{'.'.join(path)} of step {call.step.name!r} was redacted (a"
                " credential stored in clear); revise the pipeline to give it as a secret"
                ' reference {"secret": "<name>"}',
                retryable=False,
            )
    references = refs.find_references(raw)
    if secrets is None:
        raise StepFailed("this executor cannot read tenant secrets", retryable=False)
    values: dict[refs.Path, str] = {}
    facts: dict[refs.SecretReference, SecretFacts] = {}
    for reference in references:
        facts[reference], values[reference.path] = await _use(secrets, call, reference)
    masker = refs.Masker(list(values.values()))
    config = _parse(plugin_class, refs.replace_at(raw, values), masker)
    destinations = plugin_class.destinations(config)
    problems = [
        problem
        for reference in references
        for problem in refs.usage_problems(
            reference, facts[reference], namespace=call.namespace, destinations=destinations
        )
    ]
    if problems:
        raise StepFailed(masker("; ".join(problems)), retryable=False)
    return config, masker


async def _over_connection(
    plugin_class: type[Plugin], call: StepCall, connections: ConnectionLookup | None
) -> dict[str, Any]:
    name = call.step.connection or ""
    found = None
    if connections is not None:
        found = await asyncio.to_thread(connections.config_of, call.tenant_id, name)
    merged = merge_connection(plugin_class.ref(), call.step.config, name, found)
    if merged.problems:
        raise StepFailed("; ".join(merged.problems), retryable=False)
    return merged.config


async def _use(
    secrets: SecretLookup, call: StepCall, reference: refs.SecretReference
) -> tuple[SecretFacts, str]:
    try:
        return await asyncio.to_thread(
            secrets.use, call.tenant_id, reference.name, reference.version
        )
    except NotFound:
        version = "" if reference.version is None else f" version {reference.version}"
        raise StepFailed(
            f"{reference.where}: the tenant has no secret {reference.name!r}{version}",
            retryable=False,
        ) from None
    except Conflict as unreadable:  # SecretUnreadable: a destroyed or unknown key
        raise StepFailed(f"{reference.where}: {unreadable}", retryable=False) from None


def _parse(plugin_class: type[Plugin], config: dict[str, Any], masker: refs.Masker) -> Any:
    try:
        return plugin_class.parse_config(config)
    except msgspec.ValidationError as error:
        raise StepFailed(masker(f"invalid config: {error}"), retryable=False) from None
