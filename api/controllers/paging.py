"""How every list is paged (README "Lists"): by cursor (`limit`, `cursor`; the default)
or by page number (`page`, `per_page`, with `X-Total-Count` and `Link`), never both.
`provide_paging` is the `paging` dependency, so each list route declares the same four
parameters with the same rules; `paged` answers a page with its headers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import ceil
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.params import Parameter

from projections.pagination import MAX_LIMIT, MAX_PAGE, Page

DEFAULT_LIMIT = 50
T = TypeVar("T")


@dataclass(frozen=True)
class Paging:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    page: int | None = None
    """1-based page number; None: by cursor."""


def provide_paging(
    limit: Annotated[
        int | None,
        Parameter(ge=1, le=MAX_LIMIT, description=f"rows per page (default {DEFAULT_LIMIT})"),
    ] = None,
    cursor: Annotated[
        str | None, Parameter(description="the next_cursor of the previous page, unchanged")
    ] = None,
    page: Annotated[
        int | None,
        Parameter(ge=1, le=MAX_PAGE, description="page number (1-based) instead of a cursor"),
    ] = None,
    per_page: Annotated[
        int | None,
        Parameter(
            ge=1, le=MAX_LIMIT, description=f"rows per numbered page (default {DEFAULT_LIMIT})"
        ),
    ] = None,
) -> Paging:
    if page is None and per_page is None:
        return Paging(limit or DEFAULT_LIMIT, cursor)
    mixed = [name for name, value in (("limit", limit), ("cursor", cursor)) if value is not None]
    if mixed:
        message = "page through a list by cursor (limit, cursor) or by number (page, per_page)"
        raise ValidationException(
            f"{message}, not both",
            extra=[{"message": f"{message}, not both", "key": k, "source": "query"} for k in mixed],
        )
    return Paging(per_page or DEFAULT_LIMIT, None, page or 1)


def paged(request: Request, body: T, result: Page, paging: Paging) -> Response[T]:
    """The page, with `Link` to the next page (by cursor), or `X-Total-Count` and `Link`
    to the first, previous, next and last pages (by number)."""
    links: list[tuple[str, dict[str, str]]] = []
    headers: dict[str, str] = {}
    if paging.page is None:
        if result.next_cursor is not None:
            links.append(("next", {"cursor": result.next_cursor}))
    else:
        total = result.total or 0
        last = max(1, ceil(total / paging.limit))
        headers["X-Total-Count"] = str(total)
        links.append(("first", {"page": "1"}))
        if paging.page > 1:
            links.append(("prev", {"page": str(min(paging.page - 1, last))}))
        if paging.page < last:
            links.append(("next", {"page": str(paging.page + 1)}))
        links.append(("last", {"page": str(last)}))
    if links:
        headers["Link"] = ", ".join(f'<{_url(request, q)}>; rel="{rel}"' for rel, q in links)
    return Response(body, headers=headers)


def _url(request: Request, changes: dict[str, str]) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    query += list(changes.items())
    return f"{request.url.path}?{urlencode(query)}"


_QUERY_NAMES = (
    "cursor",
    "limit",
    "per_page",
    "page",
    "sort",
    "order",
    "status",
    "tag",
    "label",
    "environment",
)


def query_error(error: ValueError) -> ValidationException:
    """A list query's refusal (a bad cursor, sort, page...) as a 400 naming the
    parameter its message is about."""
    message = str(error)
    words = re.findall(r"[a-z_]+", message.lower())
    field = next((word for word in words if word in _QUERY_NAMES), None)
    if field is None:
        return ValidationException(message)
    return parameter_error(field, message)


def parameter_error(field: str, message: str, source: str = "query") -> ValidationException:
    """A 400 whose one detail names the query parameter (or header) `field`."""
    return ValidationException(
        message, extra=[{"message": message, "key": field, "source": source}]
    )
