"""The plugin interface.

A plugin is identified as `Type.name` (e.g. `Input.file`). Its `Config` is a msgspec
Struct: it is the JSON schema shown by GET /api/v1/plugins/{type}/{name}, and every
step's `config` is checked against it when a pipeline is written. `check` adds rules a
schema cannot express.

Execution (the executor role) calls `execute(config, context, records)`: an async
generator that receives the records of the upstream steps and yields its own, and that
must stop promptly when `context.cancelled` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec

Record = dict[str, Any]


class PluginError(Exception):
    """A step failed for a reason its user should read; the message becomes the step's
    error. `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


def _no_log(level: str, message: str) -> None:
    return None


@dataclass
class StepContext:
    tenant_id: str
    run_id: str
    step_name: str
    workspace: Path
    files: Path
    params: dict[str, Any] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    allow_private_networks: bool = False
    logger: Callable[[str, str], None] = _no_log

    def log(self, message: str, level: str = "info") -> None:
        self.logger(level, message)

    def tenant_path(self, relative: str) -> Path:
        root = self.files.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise PluginError(f"path {relative!r} leaves the tenant's folder", retryable=False)
        return path


class Plugin:
    type: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[msgspec.Struct]]

    @classmethod
    def ref(cls) -> str:
        return f"{cls.type}.{cls.name}"

    @classmethod
    def parse_config(cls, raw: dict[str, Any]) -> msgspec.Struct:
        return msgspec.convert(raw, type=cls.Config)

    @classmethod
    def check(cls, config: msgspec.Struct) -> list[str]:
        """Extra rules beyond the schema, as 'field: message' texts."""
        return []

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return msgspec.json.schema(cls.Config)

    def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        """Run the step. Built-in plugins gain their implementations with the executor
        role; until then the catalog serves their schemas and validation only."""
        raise NotImplementedError(f"{self.ref()} cannot execute yet")
