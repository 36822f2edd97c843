"""Checks of MCP tool arguments that REST leaves to its parameter and body declarations:
the same limits, refused with the same messages' sense, naming the argument
(api/mcp_errors.py InvalidArgument). Types are checked before, by the SDK against each
tool's input schema (its refusals answered in the same shape, api/mcp_server.py
NornMCPServer); what is left is what a JSON schema type does not say."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from api.mcp_errors import InvalidArgument
from projections.pagination import MAX_LIMIT

T = TypeVar("T")
MAX_TEXT = 200
"""As REST's TextFilter (api/controllers/common.py): a filter of at most 200 characters."""


def uuid_of(field: str, raw: str) -> UUID:
    try:
        return UUID(raw)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(field, f"{field} must be a UUID") from None


def optional_uuid(field: str, raw: str | None) -> UUID | None:
    return None if raw is None else uuid_of(field, raw)


def text(field: str, raw: str | None) -> str | None:
    """A filter: PostgreSQL text cannot hold NUL, and REST bounds filters to 200."""
    if raw is None:
        return None
    if "\x00" in raw:
        raise InvalidArgument(field, f"{field} must not contain NUL characters")
    if len(raw) > MAX_TEXT:
        raise InvalidArgument(field, f"{field} must be at most {MAX_TEXT} characters")
    return raw


def limit(raw: int, field: str = "limit", most: int = MAX_LIMIT) -> int:
    if not 1 <= raw <= most:
        raise InvalidArgument(field, f"{field} must be between 1 and {most}")
    return raw


def position(raw: int | None) -> int | None:
    if raw is not None and raw < 0:
        raise InvalidArgument("min_position", "min_position must be 0 or more")
    return raw


def moment(field: str, raw: str | None) -> datetime | None:
    """An RFC 3339 time with its offset: a time without one is ambiguous."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidArgument(
            field, f"{field} must be an RFC 3339 time with an offset, e.g. 2026-01-01T00:00:00Z"
        )
    return value


def one_of(field: str, raw: str | None, allowed: tuple[str, ...]) -> str | None:
    if raw is not None and raw not in allowed:
        raise InvalidArgument(field, f"{field} must be one of {', '.join(allowed)}")
    return raw


def body(field: str, raw: Any, kind: type[T]) -> T:
    """A JSON object as REST decodes the body of the same route (unknown fields refused,
    each field's limits): 422 naming the field, as `definition.steps[0].name`."""
    if not isinstance(raw, dict):
        raise InvalidArgument(field, f"{field} must be a JSON object", 422)
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as error:
        message, _, where = str(error).partition(" - at `$")
        path = where.rstrip("`").lstrip(".")
        named = f"{field}.{path}" if path and not path.startswith("[") else f"{field}{path}"
        raise InvalidArgument(named, message, 422) from None
