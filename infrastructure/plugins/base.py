"""The plugin interface.

A plugin is identified as `Type.name` (e.g. `Input.file`). Its `Config` is a msgspec
Struct: it is the JSON schema shown by GET /api/v1/plugins/{type}/{name}, and every
step's `config` is checked against it when a pipeline is written. `check` adds rules a
schema cannot express.

Execution (the executor role) instantiates the plugin class once per step attempt and
calls `execute(config, context, records)`: an async generator that consumes the records
of the upstream steps (an empty stream for a step without dependencies) and yields its
own. It raises `PluginError` on failure. The executor cancels the task on cancel or
timeout, so awaiting I/O is enough to stop promptly; loops that may run long without
awaiting anything call `await context.checkpoint()` now and then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, ClassVar

import msgspec

Record = dict[str, Any]


class PluginError(Exception):
    """A step failed for a reason its user should read; the message becomes the step's
    error. `retryable` says whether trying again may help (a timeout may; a bad
    expression won't)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def _no_log(level: str, message: str) -> None:
    pass


@dataclass(frozen=True)
class ProtectedDatabase:
    """A database plugins may never connect to: Norn's own (its host as written in the
    database URL: a name, an address or a Unix socket directory; its port; its name).
    infrastructure/plugins/postgres_guard.py resolves the host when it compares."""

    host: str
    port: int
    database: str


@dataclass
class StepContext:
    tenant_id: str
    run_id: str
    step_name: str
    workspace: Path
    """This run's scratch directory (exists)."""
    files: Path
    """The tenant's folder, <NORN_FILES_ROOT>/<tenant_id>; created on demand."""
    params: dict[str, Any] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the run is cancelled or times out."""
    allow_private_networks: bool = False
    """NORN_ALLOW_PRIVATE_NETWORKS=1: HTTP plugins may reach private and loopback
    addresses."""
    protected_databases: tuple[ProtectedDatabase, ...] = ()
    """Norn's own database(s): database plugins refuse to connect to them."""
    logger: Callable[[str, str], None] = field(default=_no_log)
    """(level, message); the executor stores and bounds them."""

    def log(self, message: str, level: str = "info") -> None:
        self.logger(level, message)

    def tenant_path(self, relative: str) -> Path:
        """`relative` resolved inside the tenant's folder, or PluginError when it would
        leave it: absolute paths, '..' and symbolic links pointing outside are refused."""
        text = relative.replace("\\", "/")
        if (
            not text.strip()
            or "\0" in text
            or text.startswith("/")
            or PureWindowsPath(relative).drive
            or ".." in text.split("/")
        ):
            raise PluginError(
                f"path {relative!r} must be relative to the tenant's folder, without '..'",
                retryable=False,
            )
        root = self.files
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        # resolve() follows every symbolic link on the way, so a link inside the folder
        # that points elsewhere ends up outside `root` and is refused here.
        target = (root / text).resolve()
        if target == root or root not in target.parents:
            raise PluginError(
                f"path {relative!r} leads outside the tenant's folder", retryable=False
            )
        return target

    async def checkpoint(self) -> None:
        """Let the event loop run (so a cancelled task stops here) and stop if the run
        was cancelled. For loops that may go on long without awaiting I/O."""
        if self.cancelled.is_set():
            raise PluginError("the run was cancelled", retryable=False)
        await asyncio.sleep(0)


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
        """Extra rules beyond the schema, as 'config.<field>: message' texts."""
        return []

    @classmethod
    def destinations(cls, config: msgspec.Struct) -> list[str]:
        """The host names the step sends data or credentials to (a URL's host, a
        database server), lower case: a secret with `allowed_hosts` is refused in a step
        with a destination outside them. Plugins that reach the network override this."""
        return []

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return msgspec.json.schema(cls.Config)

    def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        """Run the step: an async generator consuming `records` and yielding this
        step's records; raise PluginError on failure."""
        raise NotImplementedError(f"{self.ref()} does not implement execute")
