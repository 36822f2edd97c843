"""What authoring needs from the outside: the installed plugins as their catalog entries
describe them, the real validation of a step, and the expression language's own parser
(infrastructure/authoring_catalog.py implements it). A generator that an installation
plugs in (a language model, say) implements `Generator`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain.pipeline import PipelineDefinition


@dataclass(frozen=True)
class PluginEntry:
    """One plugin as GET /api/v1/plugins/{type}/{name} shows it, plus what authoring may
    use to pick it: the optional `keywords` a plugin declares, and whether it reaches
    the network (it names destinations)."""

    ref: str
    description: str
    schema: Mapping[str, Any]
    """The config's JSON schema (msgspec's: a $ref into $defs)."""
    credentials: frozenset[str] = frozenset()
    """Config fields that must be a secret reference {"secret": "<name>"}."""
    credential_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Dict fields (headers) -> the keys, lower case, whose values must be references."""
    keywords: tuple[str, ...] = ()
    network: bool = False


@dataclass(frozen=True)
class ExpressionFacts:
    """What the expression language says about one expression."""

    problem: str | None
    """Why it is not a usable expression, or None."""
    fields: frozenset[str] = frozenset()
    """The record fields it reads (top-level names; field("x") included)."""
    constant: bool = False
    """It reads no field, so its value is the same for every record."""
    value: Any = None
    """Its value when constant (None if evaluating it failed)."""


class AuthoringCatalog(Protocol):
    def entries(self) -> Sequence[PluginEntry]:
        """Every installed plugin, by ref."""
        ...

    def check(self, plugin: str, config: dict[str, Any]) -> list[str]:
        """The catalog's own check of a step (as 'field: message' texts)."""
        ...

    def expression(self, text: str) -> ExpressionFacts: ...


@dataclass(frozen=True)
class Reason:
    """Which phrase of the description became which step, and why."""

    phrase: str
    step: str | None
    plugin: str | None
    why: str


@dataclass(frozen=True)
class Question:
    """Something the draft needs and the description does not say. `key` is what a
    `hints` entry answers it by (e.g. "read.path", "source")."""

    key: str
    question: str


@dataclass
class Draft:
    definition: PipelineDefinition
    reasoning: list[Reason] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass(frozen=True)
class GenerationRequest:
    description: str
    name: str | None = None
    hints: Mapping[str, str] = field(default_factory=dict)


class Generator(Protocol):
    """Makes a draft from a description. Registered in the `norn.generators` entry-point
    group and chosen by NORN_GENERATOR; its draft is validated like any other, and
    anything wrong with it is answered as questions. It is given the installed plugins
    and must not save anything."""

    def generate(self, request: GenerationRequest, plugins: Sequence[PluginEntry]) -> Draft: ...
