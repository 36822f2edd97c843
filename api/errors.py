"""The one exception-to-HTTP mapping. Every error leaves in the documented shape:
{"error": {"code", "message", "details", "request_id"}}; a 500 never carries a trace."""

from __future__ import annotations

import logging
import math
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from psycopg import OperationalError as PgOperationalError

from application.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    VersionConflict,
)
from domain.errors import AggregateDeleted, InvalidCommand, InvalidDefinition, NameTaken

log = logging.getLogger(__name__)

CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "VERSION_CONFLICT",
    412: "VERSION_CONFLICT",
    413: "VALIDATION_ERROR",
    415: "VALIDATION_ERROR",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
}


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid or uuid4().hex


def error_response(
    request: Request,
    status: int,
    message: str,
    details: list[Any] | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    body = {
        "error": {
            "code": code or CODE_BY_STATUS.get(status, "INTERNAL_ERROR"),
            "message": message,
            "details": details or [],
            "request_id": request_id_of(request),
        }
    }
    return Response(body, status_code=status, headers=headers)


def _invalid_definition(request: Request, exc: InvalidDefinition) -> Response[Any]:
    details = [{"field": e.field, "message": e.message} for e in exc.errors]
    return error_response(request, 422, "the pipeline definition is invalid", details)


def _invalid_command(request: Request, exc: InvalidCommand) -> Response[Any]:
    details = [{"field": exc.field, "message": str(exc)}] if exc.field else []
    return error_response(request, 422, str(exc), details)


def _name_taken(request: Request, exc: NameTaken) -> Response[Any]:
    return error_response(request, 422, str(exc), [{"field": "name", "message": "already taken"}])


def _not_found(request: Request, exc: Exception) -> Response[Any]:
    return error_response(request, 404, str(exc) if isinstance(exc, NotFound) else "not found")


def _version_conflict(request: Request, exc: VersionConflict) -> Response[Any]:
    return error_response(request, 412 if exc.precondition else 409, str(exc))


def _quota_exceeded(request: Request, exc: QuotaExceeded) -> Response[Any]:
    details = [{"quota": exc.quota, "limit": exc.limit, "used": exc.used}]
    return error_response(request, 409, str(exc), details, code="QUOTA_EXCEEDED")


def _rate_limited(request: Request, exc: RateLimited) -> Response[Any]:
    retry_after = str(max(1, math.ceil(exc.retry_after)))
    return error_response(request, 429, str(exc), headers={"Retry-After": retry_after})


def _permission_denied(request: Request, exc: PermissionDenied) -> Response[Any]:
    return error_response(request, 403, str(exc))


def _authentication_failed(request: Request, exc: AuthenticationFailed) -> Response[Any]:
    return error_response(request, 401, str(exc), headers={"WWW-Authenticate": "Bearer"})


def _unavailable(request: Request, exc: Exception) -> Response[Any]:
    log.warning("dependency unavailable for %s: %s", request.url.path, exc)
    message = str(exc) if isinstance(exc, ServiceUnavailable) else "a backing service is down"
    return error_response(request, 503, message, headers={"Retry-After": "1"})


def _http_exception(request: Request, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        return _internal(request, exc)
    details: list[Any] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        details = [_clean_detail(d) for d in exc.extra]
    message = exc.detail if exc.detail else "request rejected"
    if status == 401:
        return error_response(
            request, 401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
        )
    return error_response(request, status, message, details, headers=exc.headers)


def _clean_detail(detail: Any) -> Any:
    # Litestar's details are {"message", "key", "source"}: keep them, minus anything odd.
    if isinstance(detail, dict):
        return {k: v for k, v in detail.items() if k in {"message", "key", "source"}}
    return str(detail)


def _too_deep(request: Request, exc: RecursionError) -> Response[Any]:
    # msgspec decodes a body like [[[[...]]]] recursively; past the interpreter's limit it
    # raises RecursionError. That is the client's input, not our fault.
    return error_response(request, 400, "the request body is nested too deeply")


def _internal(request: Request, exc: Exception) -> Response[Any]:
    rid = request_id_of(request)
    log.error("unhandled error for request %s", rid, exc_info=exc)
    return error_response(request, 500, "internal error; quote the request_id to support")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    InvalidDefinition: _invalid_definition,
    InvalidCommand: _invalid_command,
    NameTaken: _name_taken,
    NotFound: _not_found,
    AggregateDeleted: _not_found,
    VersionConflict: _version_conflict,
    QuotaExceeded: _quota_exceeded,
    RateLimited: _rate_limited,
    PermissionDenied: _permission_denied,
    AuthenticationFailed: _authentication_failed,
    ServiceUnavailable: _unavailable,
    StoreOperationalError: _unavailable,
    PgOperationalError: _unavailable,
    HTTPException: _http_exception,
    RecursionError: _too_deep,
    Exception: _internal,
}
