from __future__ import annotations

from datetime import datetime
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


class HistoryEvent(msgspec.Struct, kw_only=True):
    """One event of a resource's own stream, as its /history shows it (deployments, jobs)."""

    version: int
    event: str
    """The fact, e.g. release_verifying (the CloudEvents type is `type`)."""
    type: str
    actor: str
    at: datetime
    data: dict[str, Any]
