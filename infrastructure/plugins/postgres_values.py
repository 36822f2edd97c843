"""How PostgreSQL values become record values and back (README "Database plugins").

Reading: psycopg is told to load the types JSON has no value for straight as text, in
formats fixed by the session settings below, so most rows need no conversion in Python:

- boolean, integers, oid -> number or bool; real, double -> number (NaN, infinities
  become null in the step's output)
- numeric -> string, exact ("12.50", "NaN")
- text, varchar, char, name, enums, uuid, inet, cidr, money... -> string
- date -> "2026-01-31"; time -> "12:00:00.5"; timetz -> "12:00:00+02:00"
- timestamp -> "2026-01-31T12:00:00.5"; timestamptz -> "2026-01-31T12:00:00.5+00:00"
  (in UTC); "infinity" and "-infinity" stay those words
- interval -> ISO 8601 duration ("P1DT2H")
- bytea -> base64 string
- json, jsonb -> the JSON value itself
- arrays -> lists of the above; ranges and any other type -> PostgreSQL's text

Writing (Output.postgres), per target column: json/jsonb receives the field's value as
JSON (a string becomes a JSON string); bytea decodes a base64 string; arrays take a
list; text columns take an object or list as JSON text; anything else goes as is and
PostgreSQL parses it (so the strings read above go back into their types).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.postgres import types as builtin_types
from psycopg.types.json import set_json_loads
from psycopg.types.string import TextLoader

from infrastructure.plugins.base import PluginError, Record

SESSION_SETTINGS = (
    "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET IntervalStyle TO 'iso_8601';"
    " SET bytea_output TO 'hex'; SET extra_float_digits TO 1"
)
_AS_TEXT = (
    "numeric date time interval uuid inet cidr money int4range int8range numrange daterange"
    " tsrange tstzrange int4multirange int8multirange nummultirange datemultirange"
    " tsmultirange tstzmultirange"
).split()
_NATIVE = (
    "bool int2 int4 int8 oid float4 float8 text varchar bpchar name json jsonb bytea"
    " timestamp timestamptz timetz"
).split() + _AS_TEXT
NATIVE_OIDS = frozenset(
    oid
    for name in _NATIVE
    if (info := builtin_types.get(name)) is not None
    for oid in (info.oid, info.array_oid)
)
"""Column types whose loaded values are JSON values already (arrays of them too)."""


class _TimestampText(Loader):
    """'2026-01-31 12:00:00' -> '2026-01-31T12:00:00' (RFC 3339 without an offset)."""

    def load(self, data: Buffer) -> str:
        return bytes(data).decode().replace(" ", "T", 1)


class _TimestamptzText(Loader):
    """'2026-01-31 12:00:00+00' -> '2026-01-31T12:00:00+00:00' (the session is in UTC)."""

    def load(self, data: Buffer) -> str:
        text = bytes(data).decode().replace(" ", "T", 1)
        return text + ":00" if text.endswith("+00") else text


class _TimeTzText(Loader):
    def load(self, data: Buffer) -> str:
        return _full_offset(bytes(data).decode())


class _ByteaBase64(Loader):
    """bytea in hex output ('\\x0a0b') -> base64."""

    def load(self, data: Buffer) -> str:
        return base64.b64encode(bytes.fromhex(bytes(data)[2:].decode())).decode()


def _full_offset(text: str) -> str:
    if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit():
        return text + ":00"
    return text


def prepare_reading(connection: psycopg.AsyncConnection) -> None:
    """Load values as described above (run SESSION_SETTINGS too)."""
    adapters = connection.adapters
    for name in _AS_TEXT:
        adapters.register_loader(name, TextLoader)
    adapters.register_loader("timestamp", _TimestampText)
    adapters.register_loader("timestamptz", _TimestamptzText)
    adapters.register_loader("timetz", _TimeTzText)
    adapters.register_loader("bytea", _ByteaBase64)
    set_json_loads(msgspec.json.decode, connection)


def record_maker(description: list[Any]) -> Callable[[tuple[Any, ...]], Record]:
    """Turns a row into a record named by the columns; values of types outside
    NATIVE_OIDS pass through `plain`."""
    names = [column.name for column in description]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PluginError(
                f"the query returns more than one column named {name!r}; name them apart with AS",
                retryable=False,
            )
        seen.add(name)
    others = [i for i, column in enumerate(description) if column.type_code not in NATIVE_OIDS]
    if not others:
        return lambda row: dict(zip(names, row, strict=False))  # as many: the description's

    def make(row: tuple[Any, ...]) -> Record:
        values = list(row)
        for i in others:
            values[i] = plain(values[i])
        return dict(zip(names, values, strict=False))

    return make


def plain(value: Any) -> Any:
    """A JSON value for what a loader returned (a type registered by an extension...)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return str(value)


# --- writing ------------------------------------------------------------------------------

_encode_json = msgspec.json.Encoder().encode


def _as_json(value: Any) -> str | None:
    return None if value is None else _encode_json(value).decode()


def _text(value: Any) -> Any:
    return _encode_json(value).decode() if isinstance(value, dict | list) else value


def _bytea(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a bytea value is written as base64 text") from None


def column_writer(type_name: str, category: str) -> Callable[[Any], Any] | None:
    """How a record's value is made ready for a column (pg_type's typname and
    typcategory); None when it goes as is."""
    if type_name in ("json", "jsonb"):
        return _as_json
    if type_name == "bytea":
        return _bytea
    if category == "S":  # string types: text, varchar, char, citext...
        return _text
    return None
