"""/api/v1/plugins: the catalog of step plugins and their config schemas."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get
from litestar.params import FromPath

from api.dependencies import PluginCatalogDep
from application.authorization import Permission
from application.errors import NotFound
from infrastructure.plugins.base import Plugin


class PluginOut(msgspec.Struct):
    plugin: str
    type: str
    name: str
    description: str


class PluginDetail(PluginOut):
    config_schema: dict[str, Any]


def _out(p: type[Plugin]) -> PluginOut:
    return PluginOut(p.ref(), p.type, p.name, p.description)


class PluginController(Controller):
    path = "/api/v1/plugins"
    tags = ["plugins"]
    opt = {"permission": Permission.PLUGINS_READ}

    @get("/", summary="Every plugin")
    async def list_plugins(self, plugins: PluginCatalogDep) -> dict[str, list[PluginOut]]:
        return {"items": [_out(p) for p in plugins.all()]}

    @get("/{plugin_type:str}", summary="Plugins of one type, e.g. Input")
    async def of_type(
        self, plugin_type: FromPath[str], plugins: PluginCatalogDep
    ) -> dict[str, list[PluginOut]]:
        found = [_out(p) for p in plugins.all() if p.type == plugin_type]
        if not found:
            raise NotFound("plugin type", plugin_type)
        return {"items": found}

    @get("/{plugin_type:str}/{name:str}", summary="One plugin with its config JSON schema")
    async def detail(
        self, plugin_type: FromPath[str], name: FromPath[str], plugins: PluginCatalogDep
    ) -> PluginDetail:
        plugin = plugins.get(f"{plugin_type}.{name}")
        if plugin is None:
            raise NotFound("plugin", f"{plugin_type}.{name}")
        return PluginDetail(
            plugin.ref(), plugin.type, plugin.name, plugin.description, plugin.config_schema()
        )
