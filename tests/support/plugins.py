"""Plugins for executor tests: real plugins, loaded like a user's own through
NORN_PLUGINS (e.g. "tests.support.plugins:Emit"), that make steps behave as a test needs:
produce records, wait, fail a number of times, fail for good."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext


class _Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Emit(Plugin):
    type, name = "Test", "emit"
    description = "Yield `count` records {n: 0..count-1} (after the upstream ones)."

    class Config(_Config):
        count: int = 3

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        async for record in records:
            yield record
        for n in range(config.count):
            yield {"n": n, "step": context.step_name}


class Sleep(Plugin):
    type, name = "Test", "sleep"
    description = "Wait `seconds`, then pass the records through."

    class Config(_Config):
        seconds: float = 1.0

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
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


TEST_PLUGINS = "tests.support.plugins:" + ",tests.support.plugins:".join(
    ("Emit", "Sleep", "Flaky", "Fail")
)
"""For NORN_PLUGINS / Settings.plugins."""
