"""The one exception-to-HTTP mapping. Every error leaves in the documented shape:
{"error": {"code", "message", "details", "request_id"}}; a 500 never carries a trace."""

from __future__ import annotations

import logging
import math
import re
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from psycopg import OperationalError as PgOperationalError

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
from domain.errors import (
    AggregateDeleted,
    Conflict,
    InvalidCommand,
    InvalidDefinition,
    NameTaken,
)

log = logging.getLogger(__name__)

CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "RESOURCE_CONFLICT",  # e.g. an Idempotency-Key whose first request still runs
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


def error_code(exc: Exception) -> str:
    """The `code` a request refused with `exc` answers, for answers that report a
    refusal among other outcomes (a rollback's `not_redeployed`)."""
    if isinstance(exc, QuotaExceeded):
        return "QUOTA_EXCEEDED"
    if isinstance(exc, VersionConflict):
        return "VERSION_CONFLICT"
    if isinstance(exc, (Conflict, NameTaken)):
        return "RESOURCE_CONFLICT"
    if isinstance(exc, (InvalidCommand, InvalidDefinition)):
        return CODE_BY_STATUS[422]
    if isinstance(exc, PermissionDenied):
        return CODE_BY_STATUS[403]
    if isinstance(exc, (NotFound, AggregateDeleted)):
        return CODE_BY_STATUS[404]
    return "INTERNAL_ERROR"


def _invalid_definition(request: Request, exc: InvalidDefinition) -> Response[Any]:
    details = [{"field": e.field, "message": e.message} for e in exc.errors]
    return error_response(request, 422, exc.summary, details)


def _invalid_command(request: Request, exc: InvalidCommand) -> Response[Any]:
    details = [{"field": exc.field, "message": str(exc)}] if exc.field else []
    return error_response(request, 422, str(exc), details)


def _unapplied(request: Request, exc: UnappliedInstructions) -> Response[Any]:
    details = [
        {"field": "instructions", "message": f"could not apply {text!r}: {why}"}
        for text, why in exc.problems
    ]
    return error_response(request, 422, "some instructions could not be applied", details)


def _name_taken(request: Request, exc: NameTaken) -> Response[Any]:
    details = [{"field": exc.field, "message": "already taken"}]
    return error_response(request, 409, str(exc), details, code="RESOURCE_CONFLICT")


def _conflict(request: Request, exc: Conflict) -> Response[Any]:
    details = [{"field": exc.field, "message": str(exc)}] if exc.field else []
    return error_response(request, 409, str(exc), details, code="RESOURCE_CONFLICT")


def _not_found(request: Request, exc: Exception) -> Response[Any]:
    return error_response(request, 404, str(exc) if isinstance(exc, NotFound) else "not found")


def _version_conflict(request: Request, exc: VersionConflict) -> Response[Any]:
    """412 (a stale If-Match) or 409 (a concurrent writer won), with the version now, as
    the ETag and in the body, and the position to re-read at (?min_position=)."""
    details: list[Any] = []
    headers: dict[str, str] = {}
    if exc.current_version is not None:
        headers["ETag"] = f'"{exc.current_version}"'
        details.append(
            {
                "field": "If-Match",
                "message": f"the current version is {exc.current_version}",
                "current_version": exc.current_version,
                "position": exc.position,
            }
        )
    status = 412 if exc.precondition else 409
    return error_response(
        request, status, str(exc), details, code="VERSION_CONFLICT", headers=headers
    )


def _quota_exceeded(request: Request, exc: QuotaExceeded) -> Response[Any]:
    # The one detail shape, plus the figures a client needs to say how far over it is.
    details = [
        {
            "field": exc.quota,
            "message": f"{exc.used} of {exc.limit} in use",
            "limit": exc.limit,
            "used": exc.used,
        }
    ]
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


CLIENT_GONE = "client disconnected prematurely"
"""litestar's 500 (litestar/connection/request.py) when the client hangs up before its
body has arrived: the client's doing, and it reads no answer."""


def _http_exception(request: Request, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status == 500 and exc.detail == CLIENT_GONE:
        log.info("client hung up before sending the whole body of %s", request.url.path)
        return error_response(request, 400, "the request body ended before its end")
    if status >= 500:
        return _internal(request, exc)
    if status == 401:
        return error_response(
            request, 401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
        )
    if status == 404 and (bad := _bad_path_parameter(request)) is not None:
        name, kind = bad
        message = f"{name} must be a {'UUID' if kind == 'UUID' else 'whole number'}"
        return error_response(request, 400, message, [{"field": name, "message": message}])
    message = exc.detail if exc.detail else "request rejected"
    if not isinstance(exc, ValidationException) or not isinstance(exc.extra, list):
        return error_response(request, status, message, headers=exc.headers)
    problems = [_problem(d) for d in exc.extra]
    if status == 400 and problems and all(p.body_field for p in problems):
        # The README's rule: 400 for a request that cannot be read (not JSON, not an
        # object, bad query or path parameters), 422 for a readable body whose fields
        # are invalid.
        status, message = 422, "the request body has invalid fields"
    elif status == 400 and any(p.source == "body" for p in problems):
        message = "the request body must be a JSON object"
    elif problems and message.startswith("Validation failed for "):
        # Litestar's message repeats the request line, query string and all.
        message = f"invalid parameter(s): {', '.join(sorted({p.field for p in problems}))}"
    details = [{"field": p.field, "message": p.message} for p in problems]
    return error_response(request, status, message, details, headers=exc.headers)


def _bad_path_parameter(request: Request) -> tuple[str, str] | None:
    """Routing missed because a typed path parameter did not parse: the README's rule
    makes that a 400, not Litestar's 404."""
    rules = getattr(request.app.state, "query_rules", None)
    return rules.malformed_path_parameter(request.scope["path"]) if rules else None


class _Problem:
    """One of litestar's validation details ({"message", "key", "source"}), in the API's
    one detail shape: the field as a dotted path (steps[0].name; a query, path or header
    parameter by its name) and what is wrong with it."""

    _AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
    _NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")

    def __init__(self, message: str, key: str, source: str) -> None:
        self.source = source
        path = ""
        at = self._AT.search(message)
        if at:
            path, message = at["path"], message[: at.start()]
        elif source == "body" and key != "data":
            path = key  # litestar names a top-level field by itself
        named = self._NAMED.match(message)
        if named:
            path = f"{path}.{named['name']}" if path else named["name"]
        if source != "body":
            path = key
        elif not path and message.strip("'") == key:
            message = "a JSON object body is required"  # litestar's KeyError('data')
        # A problem with the body as a whole (not an object, missing) names no field.
        self.body_field = source == "body" and bool(path)
        self.field = path or ("body" if source == "body" else key)
        self.message = message


def _problem(detail: Any) -> _Problem:
    if not isinstance(detail, dict):
        return _Problem(str(detail), "", "")
    return _Problem(
        str(detail.get("message", "")), str(detail.get("key", "")), str(detail.get("source", ""))
    )


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
    UnappliedInstructions: _unapplied,
    Conflict: _conflict,
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
