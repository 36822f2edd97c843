"""What a batch may hold (README "Batch"), checked before any operation runs: each
operation's path, method and headers, and, for an atomic batch, that every operation is a
write whose only effect is its append (application/unit_of_work.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import msgspec
from litestar.exceptions import ValidationException

from api.schemas.batch import Operation

_PATH = re.compile(r"^/api/v1/[A-Za-z0-9\-._~%!$&'()*+,;=:@/]*$")
_QUERY = re.compile(r"^[\x21-\x7e]*$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")

SETTABLE_HEADERS = frozenset({"if-match", "idempotency-key", "x-correlation-id"})
"""What an operation may set itself. Credentials (Authorization, X-API-Key, X-Tenant-ID)
are the batch request's, so no operation acts as anyone else; X-Request-ID is given
(the batch's, with the operation's index)."""

NOT_IN_A_BATCH = {
    "/api/v1/batch": "a batch cannot hold a batch",
    "/api/v1/events/stream": "a live stream never ends; open it on its own",
    "/api/v1/ws": "a WebSocket cannot be opened in a batch",
    # A streamed download: its response listens for the client's disconnect, which an
    # operation of a batch never gets, so it never ended.
    "/api/v1/runs/export": "an export is a streamed download; send it on its own",
}

_ID = r"[^/:]+"
_ROLLBACK = re.compile(rf"^/api/v1/pipelines/{_ID}[/:]rollback/?$")
ATOMIC_WRITES: list[tuple[str, re.Pattern[str]]] = [
    (method, re.compile(pattern))
    for method, pattern in [
        ("POST", r"^/api/v1/pipelines/?$"),
        ("PUT", rf"^/api/v1/pipelines/{_ID}/?$"),
        ("DELETE", rf"^/api/v1/pipelines/{_ID}/?$"),
        ("POST", rf"^/api/v1/pipelines/{_ID}[/:](rollback|clone)/?$"),
        ("POST", r"^/api/v1/scheduler/jobs/?$"),
        ("PUT", rf"^/api/v1/scheduler/jobs/{_ID}/?$"),
        ("DELETE", rf"^/api/v1/scheduler/jobs/{_ID}/?$"),
        ("POST", rf"^/api/v1/scheduler/jobs/{_ID}[/:](enable|disable)/?$"),
    ]
]
"""The writes an atomic batch may hold: those whose only effect is their append (no
run queued or executed, no secret value sealed beside the store, no read answered
before the commit)."""


@dataclass(frozen=True)
class Prepared:
    """One operation as it will be sent."""

    method: str
    path: str
    raw_path: bytes
    query: bytes
    body: bytes | None
    headers: list[tuple[bytes, bytes]]


def prepare(operations: list[Operation], *, atomic: bool) -> list[Prepared]:
    """Every operation as a request, or a 422 naming each field that is wrong (of all the
    operations, so that one answer lists them all)."""
    problems: list[dict[str, Any]] = []
    prepared: list[Prepared] = []

    def refuse(field: str, message: str) -> None:
        problems.append({"key": field, "source": "body", "message": message})

    for index, operation in enumerate(operations):
        at = f"operations[{index}]"
        raw_path, _, query = operation.path.partition("?")
        path = unquote(raw_path)
        if not _PATH.match(raw_path) or not _QUERY.match(query):
            refuse(f"{at}.path", "must be an absolute path under /api/v1/, e.g. /api/v1/pipelines")
        elif "//" in path or any(part in (".", "..") for part in path.split("/")):
            refuse(f"{at}.path", "must not hold empty, . or .. segments")
        elif (why := NOT_IN_A_BATCH.get(path.rstrip("/"))) is not None:
            refuse(f"{at}.path", why)
        elif atomic and not _atomic_write(operation.method, path):
            refuse(
                f"{at}.path",
                f"{operation.method} {raw_path} cannot be part of an atomic batch: only "
                "creates, changes and deletes of pipelines and scheduled jobs can (no "
                "reads, runs, deployments, secrets or administration)",
            )
        elif atomic and _redeploys(operation):
            refuse(
                f"{at}.body.redeploy",
                "a rollback that redeploys releases to deployments (which may start runs): "
                "not in an atomic batch",
            )
        headers: list[tuple[bytes, bytes]] = []
        for name, value in operation.headers.items():
            lower = name.lower()
            if lower not in SETTABLE_HEADERS:
                refuse(
                    f"{at}.headers.{name}",
                    "an operation may set If-Match, Idempotency-Key and X-Correlation-ID "
                    "only; the credentials are the batch request's",
                )
            elif atomic and lower == "idempotency-key":
                refuse(
                    f"{at}.headers.{name}",
                    "not in an atomic batch: its answer would be kept before the commit",
                )
            elif not _HEADER_VALUE.match(value):
                refuse(f"{at}.headers.{name}", "must be at most 1024 visible ASCII characters")
            else:
                headers.append((lower.encode(), value.encode()))
        body = None if operation.body is None else msgspec.json.encode(operation.body)
        prepared.append(
            Prepared(operation.method, path, raw_path.encode(), query.encode(), body, headers)
        )
    if problems:
        raise ValidationException(
            "the batch cannot be run as sent; no operation ran",
            status_code=422,
            extra=problems,
        )
    return prepared


def _redeploys(operation: Operation) -> bool:
    body = operation.body
    return (
        _ROLLBACK.match(unquote(operation.path.partition("?")[0])) is not None
        and isinstance(body, dict)
        and body.get("redeploy") not in (None, False)
    )


def _atomic_write(method: str, path: str) -> bool:
    return any(m == method and pattern.match(path) for m, pattern in ATOMIC_WRITES)
