"""Reading and writing records as JSON lines, CSV and JSON, one record at a time.

Memory stays bounded by the size of one record: a record's text (a JSON line, a CSV
row, an element of a JSON array) may be at most MAX_RECORD_BYTES, and longer ones are
refused with an error rather than read whole.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import msgspec

from infrastructure.plugins.base import PluginError, Record
from infrastructure.plugins.blocking import in_thread
from infrastructure.plugins.jsonstream import json_records

MAX_RECORD_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)")
_BOM = b"\xef\xbb\xbf"


def _bad(message: str) -> PluginError:
    return PluginError(message, retryable=False)


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", bool: "a boolean", int: "a number"}
    return "null" if value is None else names.get(type(value), "a number")


# --- reading -----------------------------------------------------------------------------


def read_jsonl(file: IO[bytes], source: str) -> Iterator[Record]:
    line_number = 0
    while line := file.readline(MAX_RECORD_BYTES + 1):
        line_number += 1
        if len(line) > MAX_RECORD_BYTES:
            raise _bad(f"{source} line {line_number} is longer than {MAX_RECORD_BYTES} bytes")
        if line_number == 1:
            line = line.removeprefix(_BOM)
        if not line.strip():
            continue
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError as error:
            raise _bad(f"{source} line {line_number}: not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise _bad(f"{source} line {line_number}: {_kind(value)}, not an object (a record)")
        yield value


class _BoundedLines:
    """Lines for csv.reader, refusing a record whose text grows past the limit (one CSV
    record may span lines inside quotes)."""

    def __init__(self, file: IO[str], source: str) -> None:
        self.file, self.source = file, source
        self.in_record = 0

    def __iter__(self) -> Iterator[str]:
        while line := self.file.readline(MAX_RECORD_BYTES + 1):
            self.in_record += len(line)
            if self.in_record > MAX_RECORD_BYTES:
                raise _bad(f"{self.source}: a record is longer than {MAX_RECORD_BYTES} bytes")
            yield line


def read_csv(file: IO[str], source: str, *, infer_types: bool) -> Iterator[Record]:
    lines = _BoundedLines(file, source)
    reader = csv.reader(iter(lines), strict=True)
    try:
        header: list[str] | None = None
        for row in reader:
            lines.in_record = 0
            if not row:
                continue
            if header is None:
                header = _header(row, source)
                continue
            if len(row) > len(header):
                raise _bad(
                    f"{source} line {reader.line_num}: {len(row)} values, but the header "
                    f"has {len(header)} fields"
                )
            values = [_infer(cell) for cell in row] if infer_types else row
            record: Record = dict(zip(header, values, strict=False))
            for missing in header[len(row) :]:
                record[missing] = None
            yield record
    except csv.Error as error:
        raise _bad(f"{source} line {reader.line_num}: {error}") from None
    except UnicodeDecodeError:
        raise _bad(f"{source} near line {reader.line_num + 1}: not UTF-8 text") from None


def _header(row: list[str], source: str) -> list[str]:
    seen: set[str] = set()
    for name in row:
        if not name:
            raise _bad(f"{source} line 1: the header has an empty field name")
        if name in seen:
            raise _bad(f"{source} line 1: the header names {name!r} twice")
        seen.add(name)
    return row


def _infer(cell: str) -> Any:
    """A CSV cell as the value it spells: '' null, true/false booleans, numbers. Text
    that would not come back the same stays text: a leading zero (postcodes), integers
    of more than 18 digits (account numbers)."""
    if cell == "":
        return None
    if cell in ("true", "false"):
        return cell == "true"
    if _INTEGER.fullmatch(cell):
        return int(cell)
    if _DECIMAL.fullmatch(cell):
        return float(cell)
    return cell


async def _chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await in_thread(file.read, CHUNK_BYTES):
        yield chunk


def read_json(
    file: IO[bytes], source: str, records_path: str | None = None
) -> AsyncIterator[Record]:
    return json_records(
        _chunks(file), source=source, records_path=records_path, max_record_bytes=MAX_RECORD_BYTES
    )


# --- writing -----------------------------------------------------------------------------
# Writers encode into memory; the caller moves `take()` to the file (in a worker thread)
# whenever `pending` passes its limit, so memory stays bounded by that limit.


class JsonlWriter:
    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, record: Record, number: int) -> None:
        self.buffer += msgspec.json.encode(record)
        self.buffer += b"\n"

    def finish(self) -> None:
        pass

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def take(self) -> bytes:
        data, self.buffer = bytes(self.buffer), bytearray()
        return data


class JsonWriter(JsonlWriter):
    """A JSON array, one element per line."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def write(self, record: Record, number: int) -> None:
        self.buffer += b",\n" if self.count else b"[\n"
        self.buffer += msgspec.json.encode(record)
        self.count += 1

    def finish(self) -> None:
        self.buffer += b"\n]\n" if self.count else b"[]\n"


class CsvWriter:
    """CSV with a header: the existing file's when appending to one, else the first
    record's fields. A later record with a field the header lacks is an error, not a
    silently lost value."""

    def __init__(self, source: str, header: list[str] | None) -> None:
        self.text = io.StringIO()
        self.writer = csv.writer(self.text)
        self.source = source
        self.header = header
        self.columns = set(header or ())
        self.header_origin = "the existing file's header"

    def write(self, record: Record, number: int) -> None:
        if self.header is None:
            self.header = list(record)
            self.columns = set(self.header)
            self.header_origin = "the header, taken from the first record,"
            self.writer.writerow(self.header)
        extra = [name for name in record if name not in self.columns]
        if extra:
            raise _bad(
                f"{self.source}: record {number} has field(s) "
                f"{', '.join(map(repr, extra))} that {self.header_origin} lacks "
                f"({', '.join(self.header)}); add them to the first record (a transform "
                "can set them to null) or write jsonl"
            )
        self.writer.writerow([_cell(record.get(name)) for name in self.header])

    def finish(self) -> None:
        pass

    @property
    def pending(self) -> int:
        return self.text.tell()

    def take(self) -> bytes:
        data = self.text.getvalue().encode()
        self.text.seek(0)
        self.text.truncate()
        return data


Writer = JsonlWriter | CsvWriter


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return msgspec.json.encode(value).decode()
    return str(value)


def csv_header(file: IO[str], source: str) -> list[str] | None:
    """The header row of an existing CSV file, or None if the file is empty."""
    for row in csv.reader(iter(_BoundedLines(file, source))):
        if row:
            return _header(row, source)
    return None
