"""Records from a JSON document read in chunks, without holding the document.

The records are at `records_path` (dotted object keys, '' for the whole document): a
list there gives one record per element, an object one record. Two of ijson's push
parsers read the same chunks: `items_coro` builds the list's elements in C (the fast
path, and it validates the whole document), while `parse_coro`'s events locate the
records, say whether they are a list or an object, build the object case, and tell when
the list has ended. Only the record being read is held in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ijson
from ijson.common import ObjectBuilder

from infrastructure.plugins.base import PluginError, Record

_KINDS = {"string": "a string", "number": "a number", "boolean": "a boolean", "null": "null"}
_STARTS = {"start_map", "start_array"}
_ENDS = {"end_map", "end_array"}


def _bad(message: str) -> PluginError:
    return PluginError(message, retryable=False)


class _Locator:
    """Follows parse events: where the records start, what they are, and (for an object)
    the record itself."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target
        self.mode: str | None = None  # None (looking), "list", "object", "done"
        self.kind: str | None = None  # "list" or "object", once found
        self.list_end = (target, "end_array", None)
        self.builder: ObjectBuilder | None = None
        self.depth = 0

    def feed(self, events: list[tuple[str, str, Any]]) -> Record | None:
        """Process one chunk's events; the object record when it is complete."""
        start = 0
        if self.mode is None:
            start = self._find(events)
        if self.mode == "list":
            if self.list_end in events[start:]:  # searched in C, not event by event
                self.mode = "done"
        elif self.mode == "object":
            return self._build(events, start)
        return None

    def _find(self, events: list[tuple[str, str, Any]]) -> int:
        for position, (prefix, event, _) in enumerate(events):
            if prefix != self.target:
                continue
            if event == "start_array":
                self.mode = self.kind = "list"
            elif event == "start_map":
                self.mode = self.kind = "object"
                self.builder = ObjectBuilder()
            else:
                where = f"at records_path {self.target!r}" if self.target else "at the top"
                raise _bad(
                    f"{self.source}: expected a list or an object {where}, found "
                    f"{_KINDS.get(event, event)}"
                )
            return position if self.mode == "object" else position + 1
        return len(events)

    def _build(self, events: list[tuple[str, str, Any]], start: int) -> Record | None:
        assert self.builder is not None
        for _, event, value in events[start:]:
            self.builder.event(event, value)
            if event in _STARTS:
                self.depth += 1
            elif event in _ENDS:
                self.depth -= 1
                if self.depth == 0:
                    self.mode = "done"
                    return self.builder.value
        return None

    def finish(self) -> None:
        if self.mode is None:
            where = f"no records_path {self.target!r}" if self.target else "no JSON value"
            raise _bad(f"{self.source}: {where} in the document")


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
    target = records_path or ""
    locator = _Locator(source, target)
    items, events = ijson.sendable_list(), ijson.sendable_list()
    items_parser = ijson.items_coro(items, f"{target}.item" if target else "item", use_float=True)
    events_parser = ijson.parse_coro(events, use_float=True)
    count = pending = 0  # records so far; bytes read since the last one

    def step(chunk: bytes | None) -> list[Record]:
        nonlocal count, pending
        # Events are needed until the records are located, while an object record is
        # built, and to see a list at records_path end; a top-level list ends with the
        # document, so from its start the C parser alone reads on.
        following = (
            locator.mode is None
            or locator.mode == "object"
            or (locator.mode == "list" and target != "")
        )
        if chunk is None:
            items_parser.close()
            if following:
                events_parser.close()
        else:
            items_parser.send(chunk)
            if following:
                events_parser.send(chunk)
        found = locator.feed(events) if following else None
        del events[:]
        records: list[Record] = [] if found is None else [found]
        if locator.kind == "list":
            # The events of a chunk are read before its elements, so the list is known
            # to have started before its first element is taken.
            for item in items:
                if not isinstance(item, dict):
                    kind = "a list" if isinstance(item, list) else _KINDS_OF.get(type(item))
                    raise _bad(f"{source}: item {count + 1} is {kind}, not an object (a record)")
                records.append(item)
                count += 1
        del items[:]
        if records:
            pending = 0
        elif locator.mode in ("list", "object") and chunk is not None:
            pending += len(chunk)
            if pending > max_record_bytes:
                raise _bad(f"{source}: record {count + 1} is larger than {max_record_bytes} bytes")
        return records

    try:
        async for chunk in chunks:
            for record in step(chunk):
                yield record
        for record in step(None):
            yield record
    except ijson.JSONError as error:
        raise _bad(f"{source}: not valid JSON: {_first_line(error)}") from None
    locator.finish()


_KINDS_OF = {
    str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null",
}  # fmt: skip


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "trailing garbage" in text:
        text += " (more than one JSON value: is it JSON lines? use format jsonl)"
    return text
