"""Records from a JSON document read in chunks, without holding the document.

ijson's push parser turns each chunk into parse events; only the record being read is
built in memory. The records are at `records_path` (dotted object keys, '' for the
whole document): a list there gives one record per element, an object one record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ijson
from ijson.common import ObjectBuilder

from infrastructure.plugins.base import PluginError, Record

_STARTS = {"start_map", "start_array"}
_ENDS = {"end_map", "end_array"}
_KINDS = {"string": "a string", "number": "a number", "boolean": "a boolean", "null": "null"}


class _Reader:
    def __init__(self, source: str, records_path: str, max_record_bytes: int) -> None:
        self.source = source
        self.target = records_path
        self.item_prefix = f"{records_path}.item" if records_path else "item"
        self.max_record_bytes = max_record_bytes
        self.mode: str | None = None  # None (looking), "list", "object", "done"
        self.builder: ObjectBuilder | None = None
        self.depth = 0
        self.index = 0  # records started so far
        self.bytes_in_record = 0

    def events(self, events: list[tuple[str, str, Any]], chunk_size: int) -> list[Record]:
        done: list[Record] = []
        if self.builder is not None:
            self.bytes_in_record += chunk_size
        for prefix, event, value in events:
            if self.mode == "done":
                break
            if self.builder is not None:
                self._build(event, value, done)
            elif self.mode is None:
                if prefix == self.target:
                    self._found(event, value)
            elif self.mode == "list":
                if event == "end_array" and prefix == self.target:
                    self.mode = "done"
                else:
                    self._item(event, value)
        if self.builder is not None and self.bytes_in_record > self.max_record_bytes:
            raise PluginError(
                f"{self.source}: record {self.index} is larger than {self.max_record_bytes} bytes",
                retryable=False,
            )
        return done

    def _found(self, event: str, value: Any) -> None:
        if event == "start_array":
            self.mode = "list"
        elif event == "start_map":
            self.mode = "object"
            self._start(event, value)
        else:
            where = f"at records_path {self.target!r}" if self.target else "at the top"
            raise PluginError(
                f"{self.source}: expected a list or an object {where}, found "
                f"{_KINDS.get(event, event)}",
                retryable=False,
            )

    def _item(self, event: str, value: Any) -> None:
        if event == "start_map":
            self._start(event, value)
            return
        kind = "a list" if event == "start_array" else _KINDS.get(event, event)
        raise PluginError(
            f"{self.source}: item {self.index + 1} is {kind}, not an object (a record)",
            retryable=False,
        )

    def _start(self, event: str, value: Any) -> None:
        self.index += 1
        self.builder = ObjectBuilder()
        self.builder.event(event, value)
        self.depth = 1
        self.bytes_in_record = 0

    def _build(self, event: str, value: Any, done: list[Record]) -> None:
        assert self.builder is not None
        self.builder.event(event, value)
        if event in _STARTS:
            self.depth += 1
        elif event in _ENDS:
            self.depth -= 1
            if self.depth == 0:
                done.append(self.builder.value)
                self.builder = None
                if self.mode == "object":
                    self.mode = "done"

    def finish(self) -> None:
        if self.mode is None:
            where = f"no records_path {self.target!r}" if self.target else "no JSON value"
            raise PluginError(f"{self.source}: {where} in the document", retryable=False)


async def json_records(
    chunks: AsyncIterator[bytes],
    *,
    source: str,
    records_path: str | None = None,
    max_record_bytes: int = 16 * 1024 * 1024,
) -> AsyncIterator[Record]:
    """Yield the records of the JSON document whose bytes arrive as `chunks`. `source`
    names the document in error messages. A record whose text exceeds
    `max_record_bytes` (measured per chunk, so roughly) is refused. The whole document
    is parsed, so an error after the records is still reported."""
    reader = _Reader(source, records_path or "", max_record_bytes)
    events = ijson.sendable_list()
    parser = ijson.parse_coro(events, use_float=True)
    try:
        async for chunk in chunks:
            parser.send(chunk)
            records = reader.events(events, len(chunk))
            del events[:]
            for record in records:
                yield record
        parser.close()
        for record in reader.events(events, 0):
            yield record
    except ijson.JSONError as error:
        raise PluginError(
            f"{source}: not valid JSON: {_first_line(error)}", retryable=False
        ) from None
    reader.finish()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "trailing garbage" in text:
        text += " (more than one JSON value: is it JSON lines? use format jsonl)"
    return text
