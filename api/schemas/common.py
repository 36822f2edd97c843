from __future__ import annotations

from typing import Any

import msgspec


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: an unknown field is a 422, never silently ignored."""


class CursorPage(msgspec.Struct, kw_only=True):
    """Base of every list response: a subclass adds `items`. `has_more` says whether
    another page follows; `next_cursor` (by cursor) is passed unchanged to get it."""

    next_cursor: str | None
    has_more: bool


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: list[Any]
    request_id: str


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class FieldProblem(msgspec.Struct):
    field: str
    message: str
