"""The notifier's tables (migration 0015): which events go to which webhook (fan-out),
which deliveries are due (claim), what an attempt did (record), and what the API may
ask of them (ping, redeliver). The loops around these are infrastructure/notifier_role.py.

Fan-out moves the routes, inserts the deliveries and moves the notifier's position in
one transaction that holds the tracking row, so a crash or a second notifier can neither
skip an event nor deliver it twice; a delivery's id derives from (webhook, event), so
even an event read again inserts nothing new."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.persistence import Notification
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from application.authorization import EVENT_READ_PERMISSIONS, ROLE_PERMISSIONS
from infrastructure.envelope import CloudEvent, to_cloud_event
from infrastructure.notification_log import read_notifications
from infrastructure.webhook_protocol import PING_TYPE, delivery_id, matches, ping_body

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

Routes = dict[str, dict[str, tuple[str, ...]]]
"""tenant -> webhook id -> globs, of the active webhooks."""


async def fan_out(conn: AsyncConnection, batch: int) -> int:
    """One batch of events after the notifier's position, on an autocommit connection:
    how many were passed (0: nothing new, or another notifier moved first)."""
    cur = await conn.execute("SELECT position FROM notifier_tracking WHERE name = %s", (TRACKING,))
    row = await cur.fetchone()
    after = int(row[0]) if row else 0
    notes = await read_notifications(conn, after, batch, precise=True)
    if not notes:
        return 0
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT position FROM notifier_tracking WHERE name = %s FOR UPDATE", (TRACKING,)
        )
        row = await cur.fetchone()
        if row is not None and int(row[0]) != after:
            return 0  # another notifier passed these meanwhile: read again from there
        routes = await _routes(conn)
        rows: list[tuple[Any, ...]] = []
        for note in notes:
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
        await conn.execute(
            "INSERT INTO notifier_tracking (name, position) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
            (TRACKING, notes[-1].id),
        )
    return len(notes)


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


@dataclass(frozen=True)
class Due:
    """A claimed delivery: attempt it, then record what happened."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    tenant_id: str
    event_type: str
    event_time: datetime
    body: bytes
    attempts: int
    manual: bool
    url: str
    lease_until: datetime
    """The claim's lease: the outcome is recorded only if the row still holds it (a
    redelivery asked for meanwhile has moved it: that attempt is the one that counts)."""


_CLAIM = """
UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => %(lease)s),
  attempts = d.attempts + 1, first_attempt_at = coalesce(d.first_attempt_at, now()),
  give_up_at = coalesce(d.give_up_at, now() + make_interval(secs => %(window)s)),
  last_attempt_at = now()
FROM webhook_routes r
WHERE r.webhook_id = d.webhook_id AND d.id IN (
  SELECT d2.id FROM webhook_deliveries d2 JOIN webhook_routes r2 ON r2.webhook_id = d2.webhook_id
  WHERE d2.status IN ('pending', 'failed') AND d2.next_attempt_at <= now()
    AND NOT r2.deleted AND (r2.active OR d2.manual)
    AND NOT EXISTS (
      SELECT 1 FROM tenants t WHERE t.id::text = d2.tenant_id AND t.status <> 'active')
  ORDER BY d2.next_attempt_at LIMIT %(limit)s FOR UPDATE OF d2 SKIP LOCKED)
RETURNING d.id, d.webhook_id, d.tenant_id, d.event_type, d.event_time, d.body, d.attempts,
  d.manual, r.url, d.next_attempt_at
"""
"""Due deliveries of webhooks that are live (or a ping/redelivery) in active tenants,
leased: a notifier that dies mid-attempt leaves them due again when the lease ends."""


async def claim(conn: AsyncConnection, limit: int, lease: float, window: float) -> list[Due]:
    cur = await conn.execute(_CLAIM, {"lease": lease, "window": window, "limit": limit})
    return [Due(*row[:5], bytes(row[5]), *row[6:]) for row in await cur.fetchall()]


_SUCCEEDED = """
UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), manual = false,
  last_status_code = %s, last_duration_ms = %s, last_error = NULL
WHERE id = %s AND next_attempt_at = %s
"""
_FAILED = """
UPDATE webhook_deliveries SET manual = false, last_status_code = %(code)s,
  last_duration_ms = %(ms)s, last_error = %(error)s,
  status = CASE WHEN %(final)s OR now() >= give_up_at THEN 'dead' ELSE 'failed' END,
  next_attempt_at = least(now() + make_interval(secs => %(delay)s), give_up_at)
WHERE id = %(id)s AND next_attempt_at = %(lease)s RETURNING status
"""


async def record(
    conn: AsyncConnection,
    due: Due,
    *,
    status_code: int | None,
    duration_ms: int,
    error: str | None,
    retry_in: float,
) -> tuple[str, tuple[int, bool] | None]:
    """What an attempt did: the delivery's status after it, and, for a failed delivery
    of an event, its webhook's (consecutive failures, still active)."""
    if error is None:
        async with conn.transaction():
            await conn.execute(_SUCCEEDED, (status_code, duration_ms, due.id, due.lease_until))
            await conn.execute(
                "UPDATE webhook_routes SET failures = 0 WHERE webhook_id = %s AND failures > 0",
                (due.webhook_id,),
            )
        return "delivered", None
    final = due.event_type == PING_TYPE  # a ping is one attempt: its answer is the point
    params = {
        "code": status_code,
        "ms": duration_ms,
        "error": error[:500],
        "final": final,
        "delay": retry_in,
        "id": due.id,
        "lease": due.lease_until,
    }
    async with conn.transaction():
        cur = await conn.execute(_FAILED, params)
        row = await cur.fetchone()
        if row is None:  # redelivered meanwhile: the new attempt decides
            return "failed", None
        if due.manual:  # a ping or a redelivery asked for: not the webhook's streak
            return str(row[0]), None
        cur = await conn.execute(
            "UPDATE webhook_routes SET failures = failures + 1 WHERE webhook_id = %s"
            " RETURNING failures, active AND NOT deleted",
            (due.webhook_id,),
        )
        streak = await cur.fetchone()
    return str(row[0]), (int(streak[0]), bool(streak[1])) if streak else None


class PostgresWebhookOutbox:
    """application/webhooks.py `WebhookOutbox`: what the API asks of the deliveries."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def ping(self, webhook_id: uuid.UUID, tenant_id: str) -> uuid.UUID:
        body = ping_body(webhook_id, tenant_id)
        ping_id = str(msgspec.json.decode(body)["id"])
        row_id = delivery_id(webhook_id, ping_id)
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id,"
                " event_type, event_time, body, manual) VALUES (%s, %s, %s, %s, %s, now(), %s,"
                " true)",
                (row_id, webhook_id, tenant_id, ping_id, PING_TYPE, body),
            )
        return row_id

    def redeliver(self, webhook_id: uuid.UUID, delivery: uuid.UUID) -> bool:
        """One attempt now (also to an inactive webhook), then the usual retries while it
        is active, with a fresh retry window. False: the webhook has no such delivery."""
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE webhook_deliveries SET status = 'pending', manual = true,"
                " next_attempt_at = now(), first_attempt_at = NULL, give_up_at = NULL"
                " WHERE id = %s AND webhook_id = %s",
                (delivery, webhook_id),
            )
            return cur.rowcount == 1
