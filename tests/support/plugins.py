"""Plugins for executor tests: real plugins, loaded like a user's own through
NORN_PLUGINS (e.g. "tests.support.plugins:Emit"), that make steps behave as a test needs:
produce records (and log lines), wait, fail a number of times, fail for good, fail until
a file appears, and leave a mark in the tenant's folder each time they execute (so a test
can count executions across runs and executors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.sensitive import SecretText, SensitiveText


class _Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Emit(Plugin):
    type, name = "Test", "emit"
    description = "Yield `count` records {n: 0..count-1} (after the upstream ones)."

    class Config(_Config):
        count: int = 3
        log_lines: int = 0

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        for line in range(config.log_lines):
            context.log(f"line {line}")
        async for record in records:
            yield record
        for n in range(config.count):
            yield {"n": n, "step": context.step_name}


class Sleep(Plugin):
    type, name = "Test", "sleep"
    description = (
        "Wait `seconds`, then pass the records through. With `once`, only the first "
        "execution of the step in a run waits (a marker in the run's workspace): a run "
        "recovered on another executor then finishes quickly."
    )

    class Config(_Config):
        seconds: float = 1.0
        once: bool = False

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        marker = context.workspace / f"{context.step_name}.slept"
        if not (config.once and marker.exists()):
            marker.touch()
            context.log(f"sleeping {config.seconds}s")
            await asyncio.sleep(config.seconds)
        async for record in records:
            yield record


class Flaky(Plugin):
    type, name = "Test", "flaky"
    description = "Fail the first `failures` attempts of the step in a run, then pass through."

    class Config(_Config):
        failures: int = 1
        message: str = "flaky failure"

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        marker = context.workspace / f"{context.step_name}.attempts"
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        if attempts <= config.failures:
            context.log(f"attempt {attempts} fails on purpose", "warning")
            raise PluginError(f"{config.message} (attempt {attempts})")
        async for record in records:
            yield record


class Fail(Plugin):
    type, name = "Test", "fail"
    description = "Fail every attempt with `message`."

    class Config(_Config):
        message: str = "failed on purpose"
        retryable: bool = True

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        async for _ in records:
            break
        raise PluginError(config.message, retryable=config.retryable)
        yield {}  # pragma: no cover - makes this an async generator


class Mark(Plugin):
    type, name = "Test", "mark"
    description = (
        "Append `<run id> <step>` to `file` in the tenant's folder each time it executes, "
        "then pass the records through."
    )

    class Config(_Config):
        file: str = "marks.txt"

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        path = context.tenant_path(config.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as marks:  # one short O_APPEND write: whole lines
            marks.write(f"{context.run_id} {context.step_name}\n")
        async for record in records:
            yield record


class Gate(Plugin):
    type, name = "Test", "gate"
    description = "Fail (not retryable) until `file` exists in the tenant's folder."

    class Config(_Config):
        file: str = "open"

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        if not context.tenant_path(config.file).exists():
            raise PluginError(f"gate {config.file} is closed", retryable=False)
        async for record in records:
            yield record


class Credential(Plugin):
    """Uses a credential as a careless plugin would: says it in a log line and, asked to
    fail, in its error, so tests can see both masked."""

    type, name = "Test", "credential"
    description = "Log the `token` it was given; fail quoting it with `fail`."

    class Config(_Config):
        token: SensitiveText
        user: SecretText = "anonymous"
        host: str = "api.example.com"
        fail: bool = False

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return [config.host]

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        context.log(f"signing in as {config.user} with {config.token}")
        if config.fail:
            raise PluginError(f"{config.host} refused token {config.token}", retryable=True)
        async for record in records:
            yield record
        yield {"token_length": len(config.token), "user_length": len(config.user)}


def marks(files_root: Path, tenant_id: str, file: str = "marks.txt") -> list[tuple[str, str]]:
    """The (run id, step) marks Test.mark left in the tenant's folder, in order."""
    path = files_root / tenant_id / file
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]  # type: ignore[misc]


TEST_PLUGINS = "tests.support.plugins:" + ",tests.support.plugins:".join(
    ("Emit", "Sleep", "Flaky", "Fail", "Mark", "Gate", "Credential")
)
"""For NORN_PLUGINS / Settings.plugins."""
