"""Catalogs for the authoring tests: the built-in plugins, the README's third-party
Data_Processing.mask, and database plugins that describe themselves (as an installation's
Input.postgres would), none of them known to authoring by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from infrastructure.authoring_catalog import CatalogForAuthoring
from infrastructure.plugins.base import Plugin, Record, StepContext
from infrastructure.plugins.builtin import BUILTIN_PLUGINS
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.plugins.sensitive import SensitiveText
from tests.unit.plugins.example_mask import Mask


class _Never(Plugin):
    async def execute(  # pragma: no cover - never run by these tests
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        yield {}


class WarehouseInput(_Never):
    type, name = "Input", "warehouse"
    description = "Read rows of a Snowflake warehouse table or query."
    keywords = ("snowflake", "warehouse")

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        dsn: str
        password: SensitiveText | None = None
        table: str | None = None
        query: str | None = None

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return ["db.internal"]


class WarehouseOutput(_Never):
    type, name = "Output", "warehouse"
    description = "Insert records into a Snowflake warehouse table."

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        dsn: str
        table: str


class Feed(_Never):
    """A network source with no bound on what it reads (analyze: unbounded-read)."""

    type, name = "Input", "feed"
    description = "Read an RSS feed from a URL."

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        url: str
        token: SensitiveText | None = None

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return ["feeds.example.com"]


def catalog(*extra: type[Plugin]) -> CatalogForAuthoring:
    return CatalogForAuthoring(PluginCatalog((*BUILTIN_PLUGINS, *extra)))


BUILTIN = catalog()
EXTENDED = catalog(Mask, WarehouseInput, WarehouseOutput)
