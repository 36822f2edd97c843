"""How an MCP tool call fails (README "MCP server"): an `isError` result whose content is
the error REST would answer for the same refusal, in the same shape plus the status:
{"error": {"code", "status", "message", "details", "request_id"}}. A NotFound stays a
NotFound (another tenant's id reads like a missing one), a missing permission is
PERMISSION_DENIED, and a failure that is Norn's own is INTERNAL_ERROR with the request id
to quote, logged here with its trace and never shown to the caller."""

from __future__ import annotations

import logging
import math
from typing import Any

from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar.exceptions import ValidationException
from psycopg import OperationalError as PgOperationalError

from api.errors import CODE_BY_STATUS, error_code
from application.authoring.regenerate import UnappliedInstructions
from application.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    VersionConflict,
)
from domain.errors import AggregateDeleted, Conflict, InvalidCommand, InvalidDefinition, NameTaken

log = logging.getLogger(__name__)


class InvalidArgument(Exception):
    """A tool's argument that REST would refuse as a bad parameter (400) or a body field
    (422): the one detail names the argument."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def tool_error(exc: Exception, request_id: str) -> dict[str, Any]:
    """The error body of a failed tool call: REST's for the same exception."""
    status, message, details = _status_of(exc)
    code = error_code(exc)  # the refusals REST names apart (QUOTA_EXCEEDED, ...)
    if code == "INTERNAL_ERROR":
        code = CODE_BY_STATUS.get(status, code)
    if status >= 500 and status != 503:
        log.error("MCP tool call %s failed", request_id, exc_info=exc)
    elif status == 503:
        log.warning("MCP tool call %s: dependency unavailable: %s", request_id, exc)
    return {
        "error": {
            "code": code,
            "status": status,
            "message": message,
            "details": details,
            "request_id": request_id,
        }
    }


def _status_of(exc: Exception) -> tuple[int, str, list[dict[str, Any]]]:
    """(status, message, details) as api/errors.py answers them."""
    if isinstance(exc, InvalidArgument):
        return exc.status, str(exc), [{"field": exc.field, "message": str(exc)}]
    if isinstance(exc, InvalidDefinition):
        return 422, exc.summary, [{"field": e.field, "message": e.message} for e in exc.errors]
    if isinstance(exc, InvalidCommand):
        return 422, str(exc), [{"field": exc.field, "message": str(exc)}] if exc.field else []
    if isinstance(exc, UnappliedInstructions):
        details = [
            {"field": "instructions", "message": f"could not apply {text!r}: {why}"}
            for text, why in exc.problems
        ]
        return 422, "some instructions could not be applied", details
    if isinstance(exc, NameTaken):
        return 409, str(exc), [{"field": exc.field, "message": "already taken"}]
    if isinstance(exc, Conflict):
        return 409, str(exc), [{"field": exc.field, "message": str(exc)}] if exc.field else []
    if isinstance(exc, QuotaExceeded):
        detail = {"field": exc.quota, "message": f"{exc.used} of {exc.limit} in use"}
        return 409, str(exc), [{**detail, "limit": exc.limit, "used": exc.used}]
    if isinstance(exc, VersionConflict):
        return (412 if exc.precondition else 409), str(exc), []
    if isinstance(exc, NotFound):
        return 404, str(exc), []
    if isinstance(exc, AggregateDeleted):
        return 404, "not found", []
    if isinstance(exc, PermissionDenied):
        return 403, str(exc), []
    if isinstance(exc, AuthenticationFailed):
        return 401, str(exc), []
    if isinstance(exc, RateLimited):
        retry = max(1, math.ceil(exc.retry_after))
        return 429, str(exc), [{"field": "retry_after", "message": f"retry in {retry}s"}]
    if isinstance(exc, ValidationException):
        return exc.status_code, str(exc.detail or "invalid argument"), _validation_details(exc)
    if isinstance(exc, ServiceUnavailable):
        return 503, str(exc), []
    if isinstance(exc, StoreOperationalError | PgOperationalError):
        return 503, "a backing service is down", []
    return 500, "internal error; quote the request_id to support", []


def _validation_details(exc: ValidationException) -> list[dict[str, Any]]:
    """A list query's refusal (api/controllers/paging.py query_error) names its parameter
    as `key`: the tool's argument of the same name."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    return [
        {"field": str(d.get("key", "")), "message": str(d.get("message", ""))}
        for d in extra
        if isinstance(d, dict)
    ]
