"""Queries over the `audit_log` read model (projections/audit_log.py): a filtered,
cursor-paginated listing of events, the owner of a resource's events, and a tenant's
events in position order for `norn events export`.

Each row is joined to its event in norn_events on the position and answered as the
stored notification, which the caller turns into a CloudEvent (infrastructure/envelope.py):
the envelope is built exactly as the feed and NATS build it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from psycopg import AsyncConnection, errors, sql
from psycopg_pool import AsyncConnectionPool

from infrastructure import envelope
from infrastructure.notification_log import EVENTS_TABLE, read_notifications
from projections.pagination import Order, Where, check_limit, decode_cursor, encode_cursor
from projections.projection import tracked_position

PROJECTION = "audit_log"
_SELECT = sql.SQL(
    "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state"
    " FROM audit_log a JOIN {} e ON e.notification_id = a.position"
).format(sql.Identifier(EVENTS_TABLE))
_SORT = "position"


@dataclass(frozen=True)
class AuditFilter:
    """Which events a listing shows. `tenant` is the caller's scope (None: a platform
    admin outside any tenant, every tenant); `only_tenant` the `tenant` filter it asked
    for, applied on top of the scope, so it can narrow but never widen it. `kinds` are
    the aggregate kinds the caller may read (application/authorization.py
    `readable_event_kinds`; "*": all). Times are the events' own; `since` is inclusive
    and `until` exclusive, so consecutive ranges neither overlap nor leave a gap;
    `after`/`before` are exclusive positions."""

    tenant: str | None
    kinds: frozenset[str] = frozenset({"*"})
    only_tenant: str | None = None
    types: tuple[str, ...] = ()
    resources: tuple[tuple[str, str], ...] = ()
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    before: int | None = None


def glob_regex(pattern: str) -> str:
    """A feed `types` glob (fnmatch: `*`, `?`, `[seq]`, `[!seq]`) as an anchored
    PostgreSQL regular expression matching exactly what fnmatch.fnmatchcase matches, so a
    filter means the same in the feed and in the audit trail."""
    out, i = ["^"], 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            # As fnmatch reads a bracket: a leading "!" negates, a "]" right after the
            # opening (or the "!") is a member, no closing bracket makes "[" a literal.
            end = i + 1 if i < len(pattern) and pattern[i] == "!" else i
            end = end + 1 if end < len(pattern) and pattern[end] == "]" else end
            end = pattern.find("]", end)
            if end < 0:
                out.append(re.escape(char))
                continue
            body, i = pattern[i:end], end + 1
            negate = body.startswith("!")
            members = "".join("\\" + c if c in "\\^[]" else c for c in body[negate:])
            out.append(f"[{'^' if negate else ''}{members}]")
        else:
            out.append(re.escape(char))
    out.append("$")
    regex = "".join(out)
    try:  # a bad range ("[z-a]") is the caller's mistake, not the database's error
        re.compile(regex)
    except re.error as error:
        raise ValueError(f"types: {pattern!r} is not a valid glob ({error})") from None
    return regex


def audit_where(wanted: AuditFilter) -> Where:
    """The conditions of `wanted` over audit_log (alias `a`)."""
    where = Where().tenant(wanted.tenant, "a.tenant_id")
    if wanted.only_tenant is not None:
        where.add("a.tenant_id = %s", wanted.only_tenant)
    if "*" not in wanted.kinds:
        where.add("a.aggregate_type = ANY(%s)", sorted(wanted.kinds))
    if wanted.types:
        where.add(
            "(" + " OR ".join(["a.type ~ %s"] * len(wanted.types)) + ")",
            *(glob_regex(t) for t in wanted.types),
        )
    if wanted.resources:
        pairs = " OR ".join(
            ["(a.aggregate_type = %s AND a.originator_id = %s)"] * len(wanted.resources)
        )
        where.add(f"({pairs})", *(v for kind, ident in wanted.resources for v in (kind, ident)))
    if wanted.actor is not None:
        where.add("a.actor = %s", wanted.actor)
    if wanted.since is not None:
        where.add("a.time >= %s", wanted.since)
    if wanted.until is not None:
        where.add("a.time < %s", wanted.until)
    if wanted.after is not None:
        where.add("a.position > %s", wanted.after)
    if wanted.before is not None:
        where.add("a.position < %s", wanted.before)
    return where


def _notification(row: tuple[Any, ...]) -> Notification:
    return Notification(
        id=row[0],
        originator_id=row[1],
        originator_version=row[2],
        topic=row[3],
        state=bytes(row[4]),
    )


@dataclass(frozen=True)
class EventPage:
    items: list[Notification]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


class AuditQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def list(
        self, wanted: AuditFilter, *, limit: int, cursor: str | None, order: Order = "asc"
    ) -> EventPage:
        """The events `wanted` selects in position order (`desc`: newest first), `limit`
        after `cursor`. ValueError for a bad limit or cursor."""
        check_limit(limit)
        where = audit_where(wanted)
        if cursor is not None:
            _, last = decode_cursor(cursor, _SORT, order, int, id_type=int)
            where.add("a.position > %s" if order == "asc" else "a.position < %s", last)
        direction = sql.SQL("ASC" if order == "asc" else "DESC")
        query = sql.SQL("{} {} ORDER BY a.position {} LIMIT %s").format(
            _SELECT, where.clause(), direction
        )
        async with self._pool.connection() as conn:
            try:
                cur = await conn.execute(query, [*where.params, limit + 1])
            except errors.InvalidRegularExpression as error:
                raise ValueError(f"types: not a valid glob ({error})") from None
            rows = await cur.fetchall()
        items = [_notification(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return EventPage(items, None)
        last_position = items[-1].id
        return EventPage(items, encode_cursor(_SORT, order, last_position, last_position))

    async def owner(self, kind: str, resource_id: UUID) -> tuple[bool, str | None]:
        """(whether the resource has any event, the tenant its events belong to): who
        may see a resource's events is decided by its tenant, as for the resource."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT tenant_id FROM audit_log WHERE originator_id = %s"
                " AND aggregate_type = %s ORDER BY position LIMIT 1",
                (resource_id, kind),
            )
            row = await cur.fetchone()
        return (False, None) if row is None else (True, row[0])


@dataclass(frozen=True)
class ExportBatch:
    events: list[envelope.CloudEvent]
    done: int
    """Events looked at so far (exported or passed over), against `total`."""
    total: int


async def tenant_events(
    conn: AsyncConnection[Any],
    tenant: str,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 1000,
) -> AsyncIterator[ExportBatch]:
    """Every event of `tenant` in [since, until), in position order and in batches (never
    all in memory): what the audit read model holds by its index, then what it has not
    projected yet, read from the store itself (below the precise horizon, so nothing the
    relay published is missed) and filtered here. So an export is complete even while no
    projector runs. `conn` must be in autocommit mode."""
    projected = await tracked_position(conn, PROJECTION)
    # At or below the tracked position (positions are integers: "< projected + 1"), the
    # rows are all there; above it, the store is read instead.
    wanted = AuditFilter(tenant=tenant, since=since, until=until, before=projected + 1)
    where = audit_where(wanted)
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM audit_log a {}").format(where.clause()), where.params
    )
    counted = await cur.fetchone()
    cur = await conn.execute(
        f"SELECT count(*) FROM {EVENTS_TABLE} WHERE notification_id > %s", (projected,)
    )
    unprojected = await cur.fetchone()
    total = int(counted[0] if counted else 0) + int(unprojected[0] if unprojected else 0)
    done, after = 0, 0
    while True:  # what the read model has, by its index
        page = audit_where(replace(wanted, after=after))
        cur = await conn.execute(
            sql.SQL("{} {} ORDER BY a.position LIMIT %s").format(_SELECT, page.clause()),
            [*page.params, batch_size],
        )
        rows = await cur.fetchall()
        if not rows:
            break
        events = [envelope.to_cloud_event(_notification(row)) for row in rows]
        after, done = events[-1].position, done + len(events)
        yield ExportBatch(events, done, max(total, done))
    after = projected
    while True:  # the rest, from the store
        batch = await read_notifications(conn, after, batch_size, precise=True)
        if not batch:
            break
        after, done = batch[-1].id, done + len(batch)
        events = [envelope.to_cloud_event(n) for n in batch]
        kept = [e for e in events if e.tenant == tenant and _within(e.time, since, until)]
        yield ExportBatch(kept, done, max(total, done))


def _within(moment: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or moment >= since) and (until is None or moment < until)
