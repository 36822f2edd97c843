"""POST /api/v1/batch (README "Batch")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from api.schemas.common import Request

MAX_OPERATIONS = 100

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class Operation(Request):
    method: Method
    path: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=2048,
            description="absolute, under /api/v1/ (a query string may follow ?)",
        ),
    ]
    body: Any = None
    """The JSON body to send; none (null) sends no body."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """If-Match, Idempotency-Key (not in an atomic batch) and X-Correlation-ID only: the
    credentials (Authorization, X-API-Key, X-Tenant-ID) are the batch request's."""


class BatchRequest(Request):
    operations: Annotated[list[Operation], msgspec.Meta(min_length=1, max_length=MAX_OPERATIONS)]
    atomic: bool = False
    """All the operations' events in one append or none; writes of pipelines and jobs
    only (README "Batch")."""


class OperationResult(msgspec.Struct):
    status: int
    headers: dict[str, str]
    """ETag, Location, Retry-After, Link, X-Total-Count, Idempotent-Replayed,
    X-Request-ID and the X-RateLimit-* headers the operation answered, names in lower case."""
    body: Any
    """The JSON the operation answered (a string if it answered other text; null if
    nothing)."""


class BatchResponse(msgspec.Struct):
    results: list[OperationResult]
    atomic: bool
    committed: bool | None
    """Atomic: whether the operations' events were appended (all of them) or not (none);
    null for a batch that is not atomic."""
    position: int | None
    """Atomic and committed: the position of the commit's last event, also the `position`
    of every operation that changed something; else null."""
