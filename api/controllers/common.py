"""Small pieces every controller shares: command context, If-Match, read-your-writes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, TypeVar
from uuid import uuid4

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.params import HeaderParameter, Parameter

from api.auth import principal_of
from api.schemas.common import HistoryEvent
from application.errors import VersionConflict
from domain.errors import InvalidCommand
from domain.events import METADATA_FIELDS, CommandContext, Idempotency, NornEvent

MinPosition = Annotated[
    int | None, Parameter(ge=0, description="wait until the read model has this position")
]
"""?min_position= of every query: read-your-writes (api/dependencies.py ReadYourWrites)."""
# PostgreSQL text cannot hold NUL: refuse it as a 400 instead of failing in the query.
TextFilter = Annotated[str | None, Parameter(pattern=r"^[^\x00]*$", max_length=200)]

# ?label=region=eu&label=tier=gold: resources carrying every one of the labels.
LabelFilter = Annotated[list[str] | None, Parameter(max_items=20)]


def label_filters(raw: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in raw or []:
        key, sep, value = item.partition("=")
        if not sep or not key or "\x00" in item:
            raise ValidationException(f"label filters read key=value, not {item!r}")
        labels[key] = value
    return labels


_ETAG = re.compile(r'^\s*"?(\d+)"?\s*$')


def body_time(value: datetime | None, field: str) -> datetime | None:
    """A date-time of a request's body, in UTC; 422 naming `field` when UTC cannot hold
    it (9999-12-31T23:59:59-14:00 is in the year 10000): PostgreSQL would store it, and
    no read of it could return it. One without an offset passes through as given, for
    the command to refuse by name (naive times are ambiguous)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidCommand(
            f"{field} is out of range: in UTC it must fall within the years 1 to 9999", field
        ) from None


def command_context(request: Request) -> CommandContext:
    """Actor from the principal; the correlation id from X-Correlation-ID (or this
    request's id), so a chain of commands can be followed through the events. The cause
    is this request, or, with an Idempotency-Key, the request the key stands for, the
    same for every attempt of it (application/idempotency.py)."""
    principal = principal_of(request)
    state = request.scope.get("state", {})
    rid = state.get("request_id") or uuid4().hex
    correlation = request.headers.get("x-correlation-id") or rid
    idempotency: Idempotency | None = state.get("idempotency")  # api/idempotency.py
    return CommandContext(
        actor=principal.actor,
        correlation_id=correlation[:128],
        causation_id=rid if idempotency is None else idempotency.causation_id,
        idempotency=idempotency,
    )


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description='The ETag of the version the change is based on, e.g. "3": a 412 when '
        "it is no longer the current one (the answer carries the current one).",
    ),
]
"""If-Match of the commands that take it: declared, so the API description says which."""


def expected_version(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "*":
        return None
    if raw.strip().startswith("W/"):
        # If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches.
        raise VersionConflict("If-Match needs a strong ETag, not a weak one", precondition=True)
    match = _ETAG.match(raw)
    if not match:
        message = f'If-Match must be an ETag like "3", not {raw!r}'
        raise ValidationException(
            message, extra=[{"message": message, "key": "If-Match", "source": "header"}]
        )
    return int(match.group(1))


def etag(version: int) -> str:
    return f'"{version}"'


T = TypeVar("T")


def created(body: T, location: str) -> Response[T]:
    """201 with a Location header naming the new resource."""
    return Response(body, status_code=201, headers={"Location": location})


def history_item(event: NornEvent) -> HistoryEvent:
    """An event as a resource's history shows it: its payload is what consumers see (the
    envelope's fields and private fields left out, as in infrastructure/envelope.py)."""
    kind = type(event)
    data = {
        k: v
        for k, v in vars(event).items()
        if k not in METADATA_FIELDS and k not in kind.private_fields
    }
    return HistoryEvent(
        version=event.originator_version,
        event=kind.event_name(),
        type=kind.type_name(),
        actor=event.actor,
        at=event.timestamp,
        data=msgspec.to_builtins(data),
    )
