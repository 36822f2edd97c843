"""The catalog of plugins available to pipelines: built-ins plus third-party plugins
registered in the `norn.plugins` entry-point group."""

from __future__ import annotations

import logging
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import msgspec

from infrastructure.plugins.base import Plugin
from infrastructure.plugins.builtin import BUILTIN_PLUGINS

log = logging.getLogger(__name__)


class PluginCatalog:
    def __init__(self, plugins: tuple[type[Plugin], ...] = BUILTIN_PLUGINS) -> None:
        self._plugins: dict[str, type[Plugin]] = {p.ref(): p for p in plugins}

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

    def all(self) -> list[type[Plugin]]:
        return sorted(self._plugins.values(), key=lambda p: p.ref())

    def get(self, ref: str) -> type[Plugin] | None:
        return self._plugins.get(ref)

    def check(self, plugin: str, config: dict[str, Any]) -> list[str]:
        found = self._plugins.get(plugin)
        if found is None:
            return [f"plugin: unknown plugin {plugin!r}; see GET /api/v1/plugins"]
        try:
            parsed = found.parse_config(config)
        except msgspec.ValidationError as error:
            return [_config_problem(str(error))]
        return found.check(parsed)


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
