"""The notifier's deliveries (migration 0015): which are due (claim), what an attempt did
(record), and what the API may ask of them (ping, redeliver). Which events become
deliveries is infrastructure/webhook_fanout.py's; the loops are
infrastructure/notifier_role.py's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import ConnectionPool

from infrastructure.webhook_protocol import PING_TYPE, delivery_id, ping_body


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
  SELECT due.id FROM webhook_routes r2
  CROSS JOIN LATERAL (
    SELECT d2.id, d2.next_attempt_at FROM webhook_deliveries d2
    WHERE d2.webhook_id = r2.webhook_id AND d2.status IN ('pending', 'failed')
      AND d2.next_attempt_at <= now() AND (r2.active OR d2.manual)
    ORDER BY d2.next_attempt_at LIMIT %(per_webhook)s FOR UPDATE SKIP LOCKED) due
  WHERE NOT r2.deleted AND NOT (r2.webhook_id = ANY(%(busy)s))
    AND NOT EXISTS (
      SELECT 1 FROM tenants t WHERE t.id::text = r2.tenant_id AND t.status <> 'active')
  ORDER BY due.next_attempt_at LIMIT %(limit)s)
RETURNING d.id, d.webhook_id, d.tenant_id, d.event_type, d.event_time, d.body, d.attempts,
  d.manual, r.url, d.next_attempt_at
"""
"""Due deliveries of webhooks that are live (or a ping/redelivery) in active tenants,
oldest first but at most `per_webhook` of one webhook, none of the `busy` ones (as many
in flight here already): a receiver that hangs, or one with a large backlog, cannot
take every slot. Leased: a notifier that dies mid-attempt leaves them due again when
the lease ends."""


async def claim(
    conn: AsyncConnection,
    limit: int,
    lease: float,
    window: float,
    *,
    per_webhook: int = 8,
    busy: Sequence[uuid.UUID] = (),
) -> list[Due]:
    params = {
        "lease": lease,
        "window": window,
        "limit": limit,
        "per_webhook": per_webhook,
        "busy": list(busy),
    }
    cur = await conn.execute(_CLAIM, params)
    return [Due(*row[:5], bytes(row[5]), *row[6:]) for row in await cur.fetchall()]


_NEXT_DUE = (
    "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM webhook_deliveries"
    " WHERE status IN ('pending', 'failed')"
)


async def seconds_to_next_due(conn: AsyncConnection) -> float | None:
    """Seconds until the earliest delivery still to attempt falls due (zero or less: one
    is due, though perhaps not claimable now), or None when none is left to attempt."""
    cur = await conn.execute(_NEXT_DUE)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


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
