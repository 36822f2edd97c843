"""The plugin catalog and the expression language as authoring sees them
(application/authoring/ports.py), and the `norn.generators` entry points an installation
may choose a generator from (NORN_GENERATOR)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from application.authoring.ports import ExpressionFacts, Generator, PluginEntry
from infrastructure.plugins.base import Plugin
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.plugins.expressions import Expression, ExpressionError, referenced_fields
from infrastructure.plugins.sensitive import secrecy_of

log = logging.getLogger(__name__)
GENERATORS = "norn.generators"


class CatalogForAuthoring:
    def __init__(self, catalog: PluginCatalog) -> None:
        self._catalog = catalog

    def entries(self) -> Sequence[PluginEntry]:
        return [_entry(p) for p in self._catalog.all()]

    def check(self, plugin: str, config: dict[str, Any]) -> list[str]:
        return self._catalog.check(plugin, config)

    def expression(self, text: str) -> ExpressionFacts:
        try:
            fields = referenced_fields(text)
        except ExpressionError as error:
            return ExpressionFacts(str(error))
        if fields:
            return ExpressionFacts(None, fields)
        try:
            value = Expression(text).evaluate({})
        except ExpressionError:
            value = None
        return ExpressionFacts(None, fields, constant=True, value=value)


def _entry(plugin: type[Plugin]) -> PluginEntry:
    secrecy = secrecy_of(plugin.Config)
    keywords = getattr(plugin, "keywords", ())
    return PluginEntry(
        ref=plugin.ref(),
        description=plugin.description,
        schema=plugin.config_schema(),
        credentials=secrecy.required,
        credential_keys=dict(secrecy.keyed),
        keywords=tuple(str(k) for k in keywords) if isinstance(keywords, list | tuple) else (),
        # A plugin that names the hosts it sends to reaches the network.
        network=plugin.destinations.__func__ is not Plugin.destinations.__func__,  # type: ignore[attr-defined]
    )


class GeneratorNotFound(LookupError):
    pass


def load_generator(name: str) -> Generator:
    """The generator registered as `name` in the norn.generators entry points: a class
    (or factory) called without arguments. GeneratorNotFound when none is."""
    for ep in entry_points(group=GENERATORS):
        if ep.name == name:
            factory = ep.load()
            generator = factory() if callable(factory) else factory
            if not callable(getattr(generator, "generate", None)):
                raise GeneratorNotFound(f"{GENERATORS} entry point {name!r} has no generate()")
            log.info("authoring drafts come from generator %s (%s)", name, ep.value)
            return generator  # type: ignore[no-any-return]
    raise GeneratorNotFound(f"no {GENERATORS} entry point is named {name!r} (NORN_GENERATOR)")
