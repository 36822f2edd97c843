"""Runs one step attempt with its plugin, passing records between steps through files.

Each run has a workspace `<workspace root>/<tenant>/<run id>/`. A step reads the outputs
of the steps it depends on (in dependency order, streamed) and writes its own records,
as JSON lines, to `steps/<step>.jsonl`, with its counts beside it. The output appears
under that name only when the attempt succeeded (written to a temporary file, renamed),
so a retried or failed attempt never leaves half an output behind. Memory stays bounded
whatever the volume: records stream through in batches.

A run that succeeded has its workspace removed; others keep theirs (a retry from the
failed step reuses the outputs of the steps before it) until `prune` removes workspaces
older than the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec

from application.errors import StepFailed
from application.ports import ConnectionLookup, SecretLookup, StepCall, StepOutcome
from infrastructure.plugins.base import PluginError, ProtectedDatabase, Record, StepContext
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.run_logs import RunLogs, StepLog
from infrastructure.step_config import prepare

log = logging.getLogger(__name__)

BATCH = 500
"""Records read or written per thread hop."""
LOG_FLUSH_SECONDS = 1.0
"""How often a running step's new log lines are stored (readable over the API)."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class _Counts(msgspec.Struct):
    records_in: int
    records_out: int


class PluginStepRunner:
    def __init__(
        self,
        catalog: PluginCatalog,
        *,
        workspace_root: Path,
        files_root: Path,
        logs: RunLogs,
        allow_private_networks: bool = False,
        secrets: SecretLookup | None = None,
        connections: ConnectionLookup | None = None,
        protected_databases: tuple[ProtectedDatabase, ...] = (),
    ) -> None:
        self._catalog = catalog
        self._secrets = secrets
        self._connections = connections
        self._workspace_root = workspace_root
        self._files_root = files_root
        self._logs = logs
        self._allow_private = allow_private_networks
        self._protected = protected_databases

    def workspace(self, tenant_id: str, run_id: str) -> Path:
        return self._workspace_root / tenant_id / run_id

    async def run(self, call: StepCall, cancelled: asyncio.Event) -> StepOutcome:
        plugin_class = self._catalog.get(call.step.plugin)
        if plugin_class is None:
            raise StepFailed(f"plugin {call.step.plugin} is not installed here", retryable=False)
        config, mask = await prepare(plugin_class, call, self._secrets, self._connections)
        workspace = self.workspace(call.tenant_id, call.run_id)
        outputs = workspace / "steps"
        await asyncio.to_thread(outputs.mkdir, parents=True, exist_ok=True)
        logger = self._logs.writer(call.run_id, call.step.name, call.step_attempt)
        line = logger.line
        if mask:  # what the step says may quote a secret it was given: never stored
            line = lambda level, text: logger.line(level, mask(text))  # noqa: E731
        context = StepContext(
            tenant_id=call.tenant_id,
            run_id=call.run_id,
            step_name=call.step.name,
            workspace=workspace,
            files=self._files_root / call.tenant_id,
            params=call.params,
            cancelled=cancelled,
            allow_private_networks=self._allow_private,
            protected_databases=self._protected,
            logger=line,
        )
        counter = _Counter()
        records = counter.count(_read_inputs(outputs, call.step.depends_on))
        partial = outputs / f".{call.step.name}.{call.run_attempt}.{call.step_attempt}.part"
        started = time.monotonic()
        step_over = asyncio.Event()
        flushing = asyncio.create_task(_flush_while_running(logger, step_over))
        try:
            produced = plugin_class().execute(config, context, records)
            written = await _write(partial, produced)
            counts = _Counts(counter.seen, written)
            await asyncio.to_thread(_commit, outputs, call.step.name, partial, counts)
            elapsed = time.monotonic() - started
            logger.line("info", f"{counter.seen} records in, {written} out in {elapsed:.3f}s")
        except PluginError as error:
            line("error", str(error))
            raise StepFailed(mask(str(error)), retryable=error.retryable) from None
        except StepFailed:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as error:
            # A plugin's own bug or an unexpected condition: say what, keep the trace here.
            said = mask(f"{type(error).__name__}: {error}")
            # The trace's frames, not its message: that may quote a secret.
            log.error(
                "run %s step %s: plugin raised %s\n%s",
                call.run_id,
                call.step.name,
                said,
                "".join(traceback.format_tb(error.__traceback__)),
            )
            line("error", said)
            raise StepFailed(f"{call.step.plugin} failed: {said}") from None
        finally:
            # Left only by a failed or cancelled attempt: never half an output.
            await asyncio.to_thread(_remove_quietly, partial)
            step_over.set()
            await flushing  # its last flush stores what the step said to the end
        return StepOutcome(counts.records_in, counts.records_out)

    async def reuse(
        self, run_id: str, tenant_id: str, previous_run_id: str, step: str
    ) -> StepOutcome | None:
        source = self.workspace(tenant_id, previous_run_id) / "steps"
        target = self.workspace(tenant_id, run_id) / "steps"
        return await asyncio.to_thread(_reuse, source, target, step)

    async def finished(self, run_id: str, tenant_id: str, succeeded: bool) -> None:
        """A succeeded run's workspace goes now; others stay for a retry from their
        failed step until pruned."""
        if succeeded:
            await asyncio.to_thread(shutil.rmtree, self.workspace(tenant_id, run_id), True)

    async def prune(self, older_than: float) -> int:
        """Remove workspaces untouched for `older_than` seconds; how many were removed."""
        return await asyncio.to_thread(_prune, self._workspace_root, older_than)


async def _flush_while_running(logger: StepLog, step_over: asyncio.Event) -> None:
    """Store the step's log lines every LOG_FLUSH_SECONDS while it runs, so a long step
    can be followed, and once more when it is over. Ended by `step_over`, never
    cancelled: a flush cut short would lose the lines it had taken."""
    while not step_over.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOG_FLUSH_SECONDS):  # not wait_for (see relay.py)
                await step_over.wait()
        await logger.flush()


class _Counter:
    def __init__(self) -> None:
        self.seen = 0

    async def count(self, records: AsyncIterator[Record]) -> AsyncIterator[Record]:
        async for record in records:
            self.seen += 1
            yield record


async def _read_inputs(outputs: Path, dependencies: tuple[str, ...]) -> AsyncIterator[Record]:
    """The dependencies' records, one dependency after the other, in batches."""
    for dependency in dependencies:
        path = outputs / f"{dependency}.jsonl"
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            while True:
                batch = await asyncio.to_thread(_read_batch, handle)
                if not batch:
                    break
                for record in batch:
                    yield record
        finally:
            await asyncio.to_thread(handle.close)


def _read_batch(handle: Any) -> list[Record]:
    batch = []
    for line in _lines(handle, BATCH):
        batch.append(_decode(line))
    return batch


def _lines(handle: Any, limit: int) -> Iterator[bytes]:
    for _ in range(limit):
        line = handle.readline()
        if not line:
            return
        yield line


async def _write(path: Path, records: AsyncIterator[Record]) -> int:
    """Write the step's records as JSON lines; return how many."""
    handle = await asyncio.to_thread(path.open, "wb")
    written = 0
    batch: list[bytes] = []
    try:
        async for record in records:
            if not isinstance(record, dict):
                raise StepFailed(
                    f"the plugin yielded a {type(record).__name__}, not a record (an object)",
                    retryable=False,
                )
            try:
                batch.append(_encode(record) + b"\n")
            except (TypeError, msgspec.EncodeError) as error:
                raise StepFailed(
                    f"record {written + len(batch) + 1} is not JSON: {error}", retryable=False
                ) from None
            if len(batch) >= BATCH:
                await asyncio.to_thread(handle.writelines, batch)
                written += len(batch)
                batch = []
        if batch:
            await asyncio.to_thread(handle.writelines, batch)
            written += len(batch)
    finally:
        await asyncio.to_thread(handle.close)
    return written


def _commit(outputs: Path, step: str, partial: Path, counts: _Counts) -> None:
    (outputs / f"{step}.counts.json").write_bytes(msgspec.json.encode(counts))
    os.replace(partial, outputs / f"{step}.jsonl")


def _reuse(source: Path, target: Path, step: str) -> StepOutcome | None:
    data, counts = source / f"{step}.jsonl", source / f"{step}.counts.json"
    if not (data.exists() and counts.exists()):
        return None
    target.mkdir(parents=True, exist_ok=True)
    try:
        os.link(data, target / f"{step}.jsonl")  # no copy: outputs are never rewritten
    except OSError:
        shutil.copyfile(data, target / f"{step}.jsonl")
    shutil.copyfile(counts, target / f"{step}.counts.json")
    parsed = msgspec.json.decode(counts.read_bytes(), type=_Counts)
    return StepOutcome(parsed.records_in, parsed.records_out)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _prune(root: Path, older_than: float) -> int:
    if not root.exists():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for tenant in root.iterdir():
        if not tenant.is_dir():
            continue
        for run in tenant.iterdir():
            if run.is_dir() and run.stat().st_mtime < cutoff:
                shutil.rmtree(run, ignore_errors=True)
                removed += 1
    return removed
