"""The notifier's fan-out (migration 0015): which events go to which webhook. One batch
of events after the notifier's position moves the webhooks' routes, inserts a delivery
per (matching webhook, event) and moves the position, in one transaction that holds the
tracking row, so a crash or a second notifier can neither skip an event nor deliver it
twice; a delivery's id derives from (webhook, event), so even an event read again
inserts nothing new. Attempts are infrastructure/webhook_deliveries.py's; the loops are
infrastructure/notifier_role.py's."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from eventsourcing.persistence import Notification
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from application.authorization import EVENT_READ_PERMISSIONS, ROLE_PERMISSIONS
from domain.webhook import WebhookEvent
from infrastructure.envelope import CloudEvent, to_cloud_event
from infrastructure.notification_log import read_notifications, read_topics
from infrastructure.webhook_protocol import delivery_id, matches

log = logging.getLogger(__name__)

TRACKING = "webhooks"
DELIVERED_KINDS = frozenset(
    kind for kind, need in EVENT_READ_PERMISSIONS.items() if need in ROLE_PERMISSIONS["admin"]
)
"""What a webhook may carry: the events its owners (tenant admins) may read elsewhere."""

_INSERT = """
INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, event_type, event_time,
  position, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING
"""
_ROUTE_CHANGES = {
    "norn.webhook.updated.v1": "UPDATE webhook_routes SET url = %(url)s, events = %(events)s"
    " WHERE webhook_id = %(id)s",
    "norn.webhook.activated.v1": "UPDATE webhook_routes SET active = true, failures = 0"
    " WHERE webhook_id = %(id)s",
    "norn.webhook.deactivated.v1": "UPDATE webhook_routes SET active = false"
    " WHERE webhook_id = %(id)s",
    "norn.webhook.disabled.v1": "UPDATE webhook_routes SET active = false"
    " WHERE webhook_id = %(id)s",
    "norn.webhook.deleted.v1": "UPDATE webhook_routes SET active = false, deleted = true"
    " WHERE webhook_id = %(id)s",
}
_CREATED = """
INSERT INTO webhook_routes (webhook_id, tenant_id, url, events, active)
VALUES (%(id)s, %(tenant)s, %(url)s, %(events)s, %(active)s) ON CONFLICT DO NOTHING
"""
_DROP = """
UPDATE webhook_deliveries SET status = 'dead', last_error = 'webhook deleted'
WHERE webhook_id = %(id)s AND status IN ('pending', 'failed')
"""

_POSITION_AND_ROUTES = """
SELECT (SELECT position FROM notifier_tracking WHERE name = %s),
       EXISTS (SELECT 1 FROM webhook_routes WHERE active AND NOT deleted)
"""
"""Where the fan-out stands, and whether any webhook could take a delivery."""

_WEBHOOK_TOPICS = f"{WebhookEvent.__module__}:"
"""The topics of the webhooks' own events (domain/webhook.py), which move the routes."""

Routes = dict[str, dict[str, tuple[str, ...]]]
"""tenant -> webhook id -> globs, of the active webhooks."""


async def fan_out(conn: AsyncConnection, batch: int) -> tuple[int, int | None, int]:
    """One batch of events after the notifier's position, on an autocommit connection:
    how many were passed (0: nothing new, or another notifier moved first), where the
    notifier's position stands after it (None: another notifier moved it meanwhile), and
    how many deliveries it queued."""
    cur = await conn.execute(_POSITION_AND_ROUTES, (TRACKING,))
    position, any_route = await cur.fetchone() or (None, True)
    after = int(position or 0)
    if not any_route:
        passed = await _pass_without_routes(conn, after, batch)
        if passed is not None:
            return passed
    notes = await read_notifications(conn, after, batch, precise=True)
    if not notes:
        return 0, after, 0
    async with conn.transaction():
        if not await _still_at(conn, after):
            return 0, None, 0  # another notifier passed these meanwhile: read again from there
        routes = await _routes(conn)
        rows: list[tuple[Any, ...]] = []
        for note in notes:
            if not routes and not note.topic.startswith(_WEBHOOK_TOPICS):
                continue  # no webhook anywhere yet: only a webhook's own event matters
            event = _decoded(note)
            if event is None:
                continue
            if event.tenant and event.type.split(".")[1] in DELIVERED_KINDS:
                rows.extend(_deliveries(routes.get(event.tenant, {}), event))
            if event.type.startswith("norn.webhook."):
                await _route_change(conn, routes, event)
        if rows:
            async with conn.cursor() as many:
                await many.executemany(_INSERT, rows)
        await _move(conn, notes[-1].id)
    return len(notes), notes[-1].id, len(rows)


async def _pass_without_routes(
    conn: AsyncConnection, after: int, batch: int
) -> tuple[int, int | None, int] | None:
    """No active webhook anywhere: nothing but a webhook's own event can be delivered or
    change that, and routes change only in a pass like this one (under the tracking row).
    So the events up to the next webhook event are passed on their topics alone, without
    reading their states (most of a row; the fan-out read every event's whole row, about
    5% of the serve process's CPU at 500 creates/s on an install with no webhook). None:
    the batch starts with a webhook event, which the full pass reads."""
    topics = await read_topics(conn, after, batch, precise=True)
    if not topics:
        return 0, after, 0
    passed = next(
        (i for i, (_, topic) in enumerate(topics) if topic.startswith(_WEBHOOK_TOPICS)),
        len(topics),
    )
    if passed == 0:
        return None
    last = topics[passed - 1][0]
    async with conn.transaction():
        if not await _still_at(conn, after):
            return 0, None, 0
        await _move(conn, last)
    return passed, last, 0


async def _still_at(conn: AsyncConnection, after: int) -> bool:
    """Locks the tracking row: whether it still holds `after` (no other notifier moved)."""
    cur = await conn.execute(
        "SELECT position FROM notifier_tracking WHERE name = %s FOR UPDATE", (TRACKING,)
    )
    row = await cur.fetchone()
    return row is None or int(row[0]) == after


async def _move(conn: AsyncConnection, position: int) -> None:
    await conn.execute(
        "INSERT INTO notifier_tracking (name, position) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
        (TRACKING, position),
    )


def _decoded(note: Notification) -> CloudEvent | None:
    try:
        return to_cloud_event(note)
    except Exception:  # an event class this version cannot read: no webhook can want it
        log.warning("notifier: cannot read the event at position %d; skipped", note.id)
        return None


def _deliveries(routes: dict[str, tuple[str, ...]], event: CloudEvent) -> list[tuple[Any, ...]]:
    body: bytes | None = None
    rows = []
    for webhook_id, globs in routes.items():
        if matches(globs, event.type):
            body = body or msgspec.json.encode(event)
            rows.append(
                (
                    delivery_id(webhook_id, event.id),
                    webhook_id,
                    event.tenant,
                    event.id,
                    event.type,
                    event.time,
                    event.position,
                    body,
                )
            )
    return rows


async def _routes(conn: AsyncConnection) -> Routes:
    cur = await conn.execute(
        "SELECT webhook_id, tenant_id, events FROM webhook_routes WHERE active AND NOT deleted"
    )
    routes: Routes = {}
    for webhook_id, tenant_id, events in await cur.fetchall():
        routes.setdefault(tenant_id, {})[str(webhook_id)] = tuple(events)
    return routes


async def _route_change(conn: AsyncConnection, routes: Routes, event: CloudEvent) -> None:
    """A webhook's own event changes where later events go, from the next event on."""
    data = event.data
    params = {
        "id": event.subject,
        "tenant": event.tenant,
        "url": data.get("url"),
        "events": Jsonb(list(data.get("events") or [])),
        "active": data.get("active"),
    }
    if event.type == "norn.webhook.created.v1":
        await conn.execute(_CREATED, params)
    elif event.type in _ROUTE_CHANGES:
        await conn.execute(_ROUTE_CHANGES[event.type], params)
        if event.type == "norn.webhook.deleted.v1":
            await conn.execute(_DROP, params)
    cur = await conn.execute(
        "SELECT events FROM webhook_routes WHERE webhook_id = %s AND active AND NOT deleted",
        (event.subject,),
    )
    row = await cur.fetchone()
    tenant = routes.setdefault(event.tenant or "", {})
    if row is None:
        tenant.pop(event.subject, None)
    else:
        tenant[event.subject] = tuple(row[0])
