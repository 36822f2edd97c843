"""The query parameters of the audit trail (README "Audit trail"): the filters every
audit route shares, declared once as the `audit_query` dependency (as `paging` is for
lists, api/controllers/paging.py), and `?as_of=` of point-in-time reads. Unreadable
values are 400s naming the parameter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from litestar.params import Parameter

from api.controllers.paging import DEFAULT_LIMIT, parameter_error
from application.point_in_time import AsOf
from projections.pagination import MAX_LIMIT

_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: a 400, not a failed query
Types = Annotated[
    str | None,
    Parameter(
        pattern=_NO_NUL,
        max_length=2000,
        description="event types, comma-separated globs: norn.run.*,norn.pipeline.created.v1",
    ),
]
Actor = Annotated[
    str | None,
    Parameter(pattern=_NO_NUL, max_length=200, description="who caused it, e.g. user:<id>"),
]
Time = Annotated[
    str | None, Parameter(max_length=64, description="RFC 3339, e.g. 2026-01-31T00:00:00Z")
]
MAX_POSITION = 2**63 - 1
"""Positions are bigints: a larger one is refused (400) before it reaches a query."""
Position = Annotated[
    int | None, Parameter(ge=0, le=MAX_POSITION, description="a global event position")
]
AsOfParam = Annotated[
    str | None,
    Parameter(
        max_length=64,
        description="the resource as it was at this event position or RFC 3339 time, "
        "rebuilt from the event store",
    ),
]


@dataclass(frozen=True)
class AuditQuery:
    types: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    before: int | None = None
    order: Literal["asc", "desc"] = "asc"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def provide_audit_query(
    types: Types = None,
    actor: Actor = None,
    since: Annotated[Time, Parameter(description="events at or after this time (RFC 3339)")] = None,
    until: Annotated[Time, Parameter(description="events before this time (RFC 3339)")] = None,
    after: Annotated[Position, Parameter(description="events after this position")] = None,
    before: Annotated[Position, Parameter(description="events before this position")] = None,
    order: Annotated[
        Literal["asc", "desc"], Parameter(description="asc: oldest first (default)")
    ] = "asc",
    limit: Annotated[
        int | None,
        Parameter(ge=1, le=MAX_LIMIT, description=f"events per page (default {DEFAULT_LIMIT})"),
    ] = None,
    cursor: Annotated[
        str | None, Parameter(description="the next_cursor of the previous page, unchanged")
    ] = None,
) -> AuditQuery:
    return AuditQuery(
        types=types,
        actor=actor or None,
        since=parse_time("since", since),
        until=parse_time("until", until),
        after=after,
        before=before,
        order=order,
        limit=limit or DEFAULT_LIMIT,
        cursor=cursor,
    )


def parse_time(field: str, raw: str | None) -> datetime | None:
    """An RFC 3339 time; one without an offset is refused (which zone would it be in?)."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise parameter_error(field, f"{field}: not an RFC 3339 time: {raw!r}") from None
    if moment.tzinfo is None:
        raise parameter_error(field, f"{field}: the time needs an offset (Z or +hh:mm)")
    return moment


def parse_as_of(raw: str | None) -> AsOf | None:
    """`?as_of=`: a position (digits) or an RFC 3339 time."""
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit():
        if int(raw) > MAX_POSITION:
            raise parameter_error("as_of", f"as_of: a position is at most {MAX_POSITION}")
        return int(raw)
    try:
        return parse_time("as_of", raw)
    except Exception:
        message = f"as_of: an event position or an RFC 3339 time, not {raw!r}"
        raise parameter_error("as_of", message) from None
