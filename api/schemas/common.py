from __future__ import annotations

from typing import Any

import msgspec


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: an unknown field is a 400, never silently ignored."""


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
