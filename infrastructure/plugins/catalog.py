"""The catalog of plugins available to pipelines: built-ins plus third-party plugins
registered in the `norn.plugins` entry-point group."""

from __future__ import annotations

import logging
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import msgspec

from application.ports import SecretRules
from domain.connection import ConnectionConfig
from domain.pipeline import StepSpec
from infrastructure import redaction
from infrastructure import secret_references as refs
from infrastructure.connection_merge import merge_connection
from infrastructure.plugins.base import Plugin
from infrastructure.plugins.builtin import BUILTIN_PLUGINS
from infrastructure.plugins.sensitive import secrecy_of

log = logging.getLogger(__name__)


class PluginCatalog:
    def __init__(self, plugins: tuple[type[Plugin], ...] = BUILTIN_PLUGINS) -> None:
        self._plugins: dict[str, type[Plugin]] = {}
        for plugin in plugins:
            self.register(plugin)

    @classmethod
    def with_entry_points(cls, extra: tuple[str, ...] = ()) -> PluginCatalog:
        """Built-ins, the `norn.plugins` entry points, and `extra` classes named as
        module:Class (NORN_PLUGINS: plugins used without packaging them)."""
        catalog = cls()
        for ep in entry_points(group="norn.plugins"):
            try:
                plugin = ep.load()
                catalog.register(plugin)
            except Exception:
                log.exception("could not load plugin %s from entry point %s", ep.name, ep.value)
        for ref in extra:
            module, _, attr = ref.partition(":")
            try:
                catalog.register(getattr(import_module(module), attr))
            except Exception:
                log.exception("could not load plugin %s (NORN_PLUGINS)", ref)
        return catalog

    def register(self, plugin: type[Plugin]) -> None:
        if not (isinstance(plugin, type) and issubclass(plugin, Plugin)):
            raise TypeError(f"{plugin!r} is not a Plugin subclass")
        config = getattr(plugin, "Config", None)
        if not all(isinstance(getattr(plugin, a, None), str) for a in ("type", "name")) or not (
            isinstance(config, type) and issubclass(config, msgspec.Struct)
        ):
            raise TypeError(f"{plugin!r} needs str `type` and `name` and a msgspec Struct `Config`")
        self._plugins[plugin.ref()] = plugin
        redaction.register(plugin)

    def all(self) -> list[type[Plugin]]:
        return sorted(self._plugins.values(), key=lambda p: p.ref())

    def get(self, ref: str) -> type[Plugin] | None:
        return self._plugins.get(ref)

    def check_step(
        self,
        step: StepSpec,
        rules: SecretRules | None = None,
        connection: ConnectionConfig | None = None,
    ) -> list[str]:
        config = step.config
        if step.connection is not None:
            merged = merge_connection(step.plugin, config, step.connection, connection)
            if merged.problems:
                return list(merged.problems)
            config = merged.config
        return self.check(step.plugin, config, rules)

    def check(
        self, plugin: str, config: dict[str, Any], rules: SecretRules | None = None
    ) -> list[str]:
        """Problems with a step's config, as 'config.<field>: message' texts. Secret
        references are checked for place (a field that takes one), existence and use
        (`rules`), then stand in as a placeholder for the schema check."""
        found = self._plugins.get(plugin)
        if found is None:
            return [f"plugin: unknown plugin {plugin!r}; see GET /api/v1/plugins"]
        problems = refs.reference_problems(
            config, secrecy_of(found.Config), new_write=rules is None or rules.new_write
        )
        references = refs.find_references(config)
        # References, redactions and malformed references are judged above; the schema
        # judges the rest with a placeholder text in their place.
        stand_ins = {path: refs.PLACEHOLDER for path, v in refs.walk(config) if isinstance(v, dict)}
        if stand_ins:
            config = refs.replace_at(config, stand_ins)
        try:
            parsed = found.parse_config(config)
        except msgspec.ValidationError as error:
            return [*problems, _config_problem(str(error))]
        problems.extend(found.check(parsed))
        if references and rules is not None and not problems:
            destinations = [h for h in found.destinations(parsed) if refs.PLACEHOLDER not in h]
            for reference in references:
                problems.extend(
                    refs.usage_problems(
                        reference,
                        rules.secrets(reference.name),
                        namespace=rules.namespace,
                        destinations=destinations,
                    )
                )
        return problems


def _config_problem(message: str) -> str:
    # msgspec says e.g. "Object missing required field `path` - at `$`" or
    # "Expected `str`, got `int` - at `$.path`".
    text, _, where = message.partition(" - at `")
    where = where.rstrip("`")
    if "missing required field `" in text:
        field = text.split("`")[1]
        return f"config.{field}: required"
    if "unknown field `" in text:
        field = text.split("`")[1]
        return f"config.{field}: unknown field"
    path = where.removeprefix("$").lstrip(".")
    return f"config{'.' + path if path else ''}: {text}"
