"""Keyset pagination shared by every list query.

A page is `ORDER BY <sort column>, id` and the next page starts strictly after the last
row's (sort value, id). Unlike OFFSET, this is stable under inserts and deletes and
costs the same on page 1000 as on page 1. The cursor is opaque to clients: base64url of
a small JSON document carrying the sort, order, last value and last id, so a cursor
used with a different sort is recognised and refused instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row

from projections.snapshot import ConnectionSource

Order = Literal["asc", "desc"]
MAX_LIMIT = 500
MAX_PAGE = 100_000
"""page * per_page stays far from where OFFSET would scan for seconds."""
_TOTAL = "norn_total_rows"
"""The column a numbered page carries its total in (no read model has one so named)."""


class _Cursor(msgspec.Struct, forbid_unknown_fields=True):
    s: str  # sort column
    o: str  # order
    v: str | int | float | None  # sort value of the last row (datetimes as ISO 8601)
    t: bool  # whether v is a datetime
    i: str  # id of the last row


def encode_cursor(sort: str, order: Order, value: Any, row_id: Any) -> str:
    is_time = isinstance(value, datetime)
    payload = _Cursor(
        s=sort, o=order, v=value.isoformat() if is_time else value, t=is_time, i=str(row_id)
    )
    return base64.urlsafe_b64encode(msgspec.json.encode(payload)).rstrip(b"=").decode("ascii")


def decode_cursor(
    cursor: str, sort: str, order: Order, value_type: type, id_type: type = UUID
) -> tuple[Any, Any]:
    """(sort value, id) of the row the page starts after. Raises ValueError for a cursor
    that is malformed, forged with the wrong types (which would otherwise reach SQL as
    a type error, a 500), or was issued for another sort/order."""
    invalid = "invalid cursor: pass the next_cursor of a previous page unchanged"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as error:
        raise ValueError(invalid) from error
    if (payload.s, payload.o) != (sort, order):
        raise ValueError(
            f"invalid cursor: it was issued for sort={payload.s} order={payload.o}, "
            f"not sort={sort} order={order}"
        )
    try:
        value: Any = payload.v
        if payload.t:
            value = datetime.fromisoformat(str(payload.v))
            if value.tzinfo is None:
                raise TypeError("timestamp without a time zone")
        if not isinstance(value, value_type):
            raise TypeError(f"sort value is not a {value_type.__name__}")
        row_id = id_type(payload.i)
    except (ValueError, TypeError) as error:
        raise ValueError(invalid) from error
    return value, row_id


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")


def check_order(order: str) -> Order:
    if order not in ("asc", "desc"):
        raise ValueError("order must be 'asc' or 'desc'")
    return order  # type: ignore[return-value]


def keyset(
    sort: str, order: Order, cursor: str | None, value_type: type, id_column: str = "id"
) -> tuple[sql.Composable | None, list[Any], sql.Composable]:
    """The WHERE condition that starts after the cursor (None on the first page), its
    parameters, and the matching ORDER BY. `sort` must be a trusted NOT NULL column
    (a row comparison with NULL matches nothing) whose values are of `value_type`; the
    id column is a uuid."""
    column, ident = sql.Identifier(sort), sql.Identifier(id_column)
    direction = sql.SQL("DESC" if order == "desc" else "ASC")
    order_by = sql.SQL("ORDER BY {c} {d}, {i} {d}").format(c=column, i=ident, d=direction)
    if cursor is None:
        return None, [], order_by
    value, row_id = decode_cursor(cursor, sort, order, value_type)
    # A row comparison matches ORDER BY (col, id) exactly, ties on the sort value
    # included, and uses the (…, col, id) indexes.
    comparison = sql.SQL("<" if order == "desc" else ">")
    condition = sql.SQL("({c}, {i}) {op} (%s, %s)").format(c=column, i=ident, op=comparison)
    return condition, [value, row_id], order_by


def page_of(
    rows: Sequence[Mapping[str, Any]], limit: int, sort: str, order: Order, id_key: str = "id"
) -> tuple[list[dict[str, Any]], str | None]:
    """Cut rows fetched with LIMIT limit + 1 into the page and the next cursor (None on
    the last page: the extra row tells whether there is one, without a COUNT)."""
    items = [dict(r) for r in rows[:limit]]
    if len(rows) <= limit:
        return items, None
    last = rows[limit - 1]
    return items, encode_cursor(sort, order, last[sort], last[id_key])


class Where:
    """The conditions of a read-model query and their parameters, joined with AND."""

    def __init__(self) -> None:
        self.conditions: list[sql.Composable] = []
        self.params: list[Any] = []

    def add(self, condition: str | sql.Composable, *params: Any) -> Where:
        self.conditions.append(sql.SQL(condition) if isinstance(condition, str) else condition)
        self.params.extend(params)
        return self

    def tenant(self, tenant_id: str | None, column: str = "tenant_id") -> Where:
        """Scope to one tenant; None (a platform admin outside any tenant) scopes to
        none. Another tenant's rows are simply not there (404, never 403)."""
        if tenant_id is not None:
            self.add(sql.SQL("{} = %s").format(sql.Identifier(*column.split("."))), tenant_id)
        return self

    def clause(self) -> sql.Composable:
        if not self.conditions:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self.conditions)


async def select_one(
    pool: ConnectionSource, columns: sql.Composable, source: sql.Composable, where: Where
) -> dict[str, Any] | None:
    query = sql.SQL("SELECT {} FROM {}{}").format(columns, source, where.clause())
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, where.params)
        return await cur.fetchone()


@dataclass
class Page:
    """One page of a list query. Unpacks as (items, next_cursor). `total` (the rows the
    query selects in all) is counted only for a page asked for by number."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    has_more: bool
    total: int | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.items, self.next_cursor))

    def map(self, row: Callable[[dict[str, Any]], dict[str, Any]]) -> Page:
        return replace(self, items=[row(r) for r in self.items])


async def select_page(
    pool: ConnectionSource,
    columns: sql.Composable,
    source: sql.Composable,
    where: Where,
    *,
    sort: str,
    order: Order,
    value_type: type,
    limit: int,
    cursor: str | None,
    page: int | None = None,
) -> Page:
    """One page of the rows `where` selects, sorted by `sort` then id: the `limit` rows
    after `cursor` (keyset), or, given `page` (1-based), the page-th run of `limit` rows
    with the total counted (OFFSET: costs grow with the page number; cursors do not).
    ValueError for a bad limit, cursor or page."""
    check_limit(limit)
    if page is not None:
        return await _numbered_page(pool, columns, source, where, sort, order, limit, page)
    after, after_params, order_by = keyset(sort, order, cursor, value_type)
    if after is not None:
        where.add(after, *after_params)
    query = sql.SQL("SELECT {} FROM {}{} {} LIMIT %s").format(
        columns, source, where.clause(), order_by
    )
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, [*where.params, limit + 1])
        rows = await cur.fetchall()
    items, next_cursor = page_of(rows, limit, sort, order)
    return Page(items, next_cursor, next_cursor is not None)


async def _numbered_page(
    pool: ConnectionSource,
    columns: sql.Composable,
    source: sql.Composable,
    where: Where,
    sort: str,
    order: Order,
    limit: int,
    page: int,
) -> Page:
    if not 1 <= page <= MAX_PAGE:
        raise ValueError(f"page must be between 1 and {MAX_PAGE}")
    _, _, order_by = keyset(sort, order, None, object)
    # The total counted in the same statement as the page (a window is computed before
    # the LIMIT): counted apart, a row committed in between made them disagree.
    query = sql.SQL("SELECT {}, count(*) OVER () AS {} FROM {}{} {} LIMIT %s OFFSET %s").format(
        columns, sql.Identifier(_TOTAL), source, where.clause(), order_by
    )
    count = sql.SQL("SELECT count(*) AS {} FROM {}{}").format(
        sql.Identifier(_TOTAL), source, where.clause()
    )
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, [*where.params, limit, (page - 1) * limit])
        rows = await cur.fetchall()
        if rows:
            total = int(rows[0][_TOTAL])
        elif page == 1:
            total = 0  # nothing matched at all, in the same statement
        else:  # past the last page: no row carries the total, and none is shown
            await cur.execute(count, where.params)
            total = int((await cur.fetchone() or {_TOTAL: 0})[_TOTAL])
    items = [{k: v for k, v in r.items() if k != _TOTAL} for r in rows]
    return Page(items, None, page * limit < total, total)
