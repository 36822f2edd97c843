"""Input.file and Output.file: records from and to files in the tenant's folder.

Paths are relative to <NORN_FILES_ROOT>/<tenant_id>; StepContext.tenant_path refuses
absolute paths, '..' and symbolic links that lead outside it. Output goes to a staged
file next to the target and reaches the target only when every record was written: a
step that fails or is cancelled leaves the target as it was. File work runs in worker
threads (infrastructure/plugins/blocking.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import msgspec

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.blocking import batched, in_thread
from infrastructure.plugins.fileformats import (
    CsvWriter,
    JsonlWriter,
    JsonWriter,
    Writer,
    csv_header,
    read_csv,
    read_json,
    read_jsonl,
)
from infrastructure.plugins.schema import (
    Format,
    NonEmpty,
    RecordsPath,
    StepConfig,
    relative_path_problems,
)

_INFER_TYPES = (
    "csv only: cells that spell numbers, true/false or nothing become numbers, booleans "
    "and null (a leading zero or more than 18 digits stays text); false keeps every cell "
    "as text."
)
CHECK_EVERY = 1000  # records between checks for cancellation
WRITE_BYTES = 256 * 1024  # encoded output gathered before a write


def _io_error(source: str, error: OSError) -> PluginError:
    """A missing file is retried (README "Retries and timeouts"): a file that has not
    arrived yet is the commonest reason a step sets `retries`. A folder where a file
    should be is the configuration's mistake: trying again cannot help."""
    if isinstance(error, FileNotFoundError):
        return PluginError(f"{source}: no such file in the tenant's folder (yet)")
    if isinstance(error, IsADirectoryError):
        return PluginError(f"{source} is a folder, not a file", retryable=False)
    return PluginError(f"{source}: {error.strerror or error}")


def _open_text(path: Path, mode: str = "r") -> IO[str]:
    return open(path, mode, newline="", encoding="utf-8-sig")


class InputFile(Plugin):
    type, name = "Input", "file"
    description = "Read records from a file in the tenant's folder (JSON lines, CSV, JSON)."

    class Config(StepConfig):
        path: NonEmpty
        format: Format = "jsonl"
        records_path: RecordsPath | None = None  # json only
        infer_types: Annotated[bool, msgspec.Meta(description=_INFER_TYPES)] = True

    @classmethod
    def check(cls, config: Any) -> list[str]:
        problems = relative_path_problems(config.path)
        if config.records_path is not None and config.format != "json":
            problems.append("config.records_path: only for format json")
        return problems

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        # Upstream records are not this step's input: a dependency only orders the read
        # after that step (e.g. after the step that wrote the file).
        async for _ in records:
            pass
        path = context.tenant_path(config.path)
        source = f"file {config.path!r}"
        count = 0
        try:
            if config.format == "csv":
                file: IO[Any] = await in_thread(_open_text, path)
            else:
                file = await in_thread(open, path, "rb")
            try:
                async for record in self._records(file, config, source):
                    count += 1
                    yield record
                    if count % CHECK_EVERY == 0:
                        await context.checkpoint()
            finally:
                file.close()
        except OSError as error:
            raise _io_error(source, error) from None
        context.log(f"read {count} records from {config.path}")

    @staticmethod
    def _records(file: IO[Any], config: Any, source: str) -> AsyncIterator[Record]:
        if config.format == "json":
            return read_json(file, source, config.records_path)
        if config.format == "jsonl":
            return batched(read_jsonl(file, source), file.tell)
        rows = read_csv(file, source, infer_types=config.infer_types)
        return batched(rows, file.buffer.tell)


class OutputFile(Plugin):
    type, name = "Output", "file"
    description = "Write records to a file in the tenant's folder; passes them on."

    class Config(StepConfig):
        path: NonEmpty
        format: Format = "jsonl"
        mode: Literal["overwrite", "append"] = "overwrite"

    @classmethod
    def check(cls, config: Any) -> list[str]:
        return relative_path_problems(config.path)

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        target = context.tenant_path(config.path)
        source = f"file {config.path!r}"
        staged = _Staged(target, config.format, config.mode, source)
        count = 0
        try:
            writer = await staged.open()
            async for record in records:
                count += 1
                writer.write(record, count)
                if writer.pending >= WRITE_BYTES:
                    await in_thread(staged.write, writer.take())
                yield record
                if count % CHECK_EVERY == 0:
                    await context.checkpoint()
            writer.finish()
            await in_thread(staged.write, writer.take())
            await in_thread(staged.commit)
        except OSError as error:
            raise _io_error(source, error) from None
        finally:
            staged.discard()
        context.log(f"wrote {count} records to {config.path} ({config.mode})")


class _Staged:
    """The file being written, beside the target, moved or appended into it on commit.

    overwrite: the staged file replaces the target by rename (atomic).
    append, jsonl and csv: the staged file holds the new lines, copied onto the end of
    the target on commit (the target stays untouched until then).
    append, json: the target's records are copied into the staged file first (an array
    cannot be appended in place), then it replaces the target by rename.
    """

    def __init__(self, target: Path, format: str, mode: str, source: str) -> None:
        self.target, self.format, self.mode, self.source = target, format, mode, source
        self.path = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.norn-tmp")
        self.file: IO[bytes] | None = None
        self.replace = mode == "overwrite" or format == "json"

    async def open(self) -> Writer:
        if await in_thread(self.target.is_dir):
            raise PluginError(f"{self.source} is a folder, not a file", retryable=False)
        await in_thread(lambda: self.target.parent.mkdir(parents=True, exist_ok=True))
        existing = self.mode == "append" and await in_thread(self.target.exists)
        header = None
        if existing and self.format == "csv":
            old = await in_thread(_open_text, self.target)
            try:
                header = await in_thread(csv_header, old, self.source)
            finally:
                old.close()
        self.file = await in_thread(open, self.path, "xb")
        if self.format == "csv":
            return CsvWriter(self.source, header)
        if self.format == "jsonl":
            return JsonlWriter()
        writer = JsonWriter()
        if existing:
            await self._copy_existing_array(writer)
        return writer

    async def _copy_existing_array(self, writer: JsonWriter) -> None:
        old = await in_thread(open, self.target, "rb")
        try:
            async for record in read_json(old, self.source):
                writer.write(record, 0)
                if writer.pending >= WRITE_BYTES:
                    await in_thread(self.write, writer.take())
        finally:
            old.close()

    def write(self, data: bytes) -> None:
        assert self.file is not None
        self.file.write(data)

    def commit(self) -> None:
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.replace:
            os.replace(self.path, self.target)
            return
        with open(self.target, "ab") as out, open(self.path, "rb") as new:
            if out.tell() > 0 and not _ends_with_newline(self.target):
                out.write(b"\n")
            shutil.copyfileobj(new, out)
            out.flush()
            os.fsync(out.fileno())

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"
