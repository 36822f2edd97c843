"""What a webhook delivery is on the wire, and when it is tried again (README "Webhooks").

- The body is the event's CloudEvent (infrastructure/envelope.py) as JSON; a ping's is a
  CloudEvent-shaped `norn.webhook.ping` with the webhook's id as subject and no position.
- `X-Norn-Timestamp`: Unix seconds of the attempt. `X-Norn-Signature`:
  `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; a receiver recomputes it and
  refuses old timestamps, so a captured request cannot be replayed later.
- `X-Norn-Delivery`: the delivery id, uuid5 of (webhook id, event id): the same for
  every attempt and redelivery of one event to one webhook, which is how a receiver
  drops the duplicates at-least-once delivery makes.
- Retries: exponential backoff with full jitter (a random delay between 0 and
  min(cap, base * 2^(attempt-1))), until the window (24 h) after the first attempt.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

SIGNATURE_HEADER = "X-Norn-Signature"
TIMESTAMP_HEADER = "X-Norn-Timestamp"
DELIVERY_HEADER = "X-Norn-Delivery"
EVENT_HEADER = "X-Norn-Event"
PING_TYPE = "norn.webhook.ping"
_DELIVERIES = uuid.UUID("5b0d3c1e-9a55-4b8e-8e0f-6f7d2f1a9c42")


def delivery_id(webhook_id: uuid.UUID | str, event_id: str) -> uuid.UUID:
    """One per (webhook, event): an event read twice makes one delivery."""
    return uuid.uuid5(_DELIVERIES, f"{webhook_id}:{event_id}")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: int, body: bytes, presented: str) -> bool:
    """What a receiver does (README shows it): constant-time comparison."""
    return hmac.compare_digest(signature(secret, timestamp, body), presented)


def headers(secret: str, delivery: uuid.UUID, event_type: str, body: bytes, now: float) -> dict:
    timestamp = int(now)
    return {
        "Content-Type": "application/cloudevents+json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        DELIVERY_HEADER: str(delivery),
        EVENT_HEADER: event_type,
    }


def matches(globs: Iterable[str], event_type: str) -> bool:
    """Case-sensitive, as the live feed's `types=` (infrastructure/event_feed.py)."""
    return any(fnmatch.fnmatchcase(event_type, glob) for glob in globs)


def ping_body(webhook_id: uuid.UUID, tenant_id: str, now: datetime | None = None) -> bytes:
    """A CloudEvent-shaped ping: its own id each time, no position (it is not stored)."""
    moment = now or datetime.now(UTC)
    return msgspec.json.encode(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": f"/tenants/{tenant_id}/webhooks/{webhook_id}",
            "type": PING_TYPE,
            "subject": str(webhook_id),
            "time": moment,
            "datacontenttype": "application/json",
            "data": {"webhook_id": str(webhook_id)},
            "position": None,
            "version": None,
            "tenant": tenant_id,
            "actor": "system:notifier",
            "correlationid": str(webhook_id),
            "causationid": None,
        }
    )


@dataclass(frozen=True)
class RetryPolicy:
    """When attempts are made. Injectable so tests take seconds, not a day."""

    base: float = 10.0
    cap: float = 3_600.0
    window: float = 24 * 3_600.0
    """After this long since the first attempt, a delivery that keeps failing is dead."""
    disable_after: int = 20
    """Consecutive failed attempts of one webhook that disable it."""

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds until the attempt after `attempts` failed ones: full jitter."""
        ceiling = min(self.cap, self.base * 2 ** min(max(attempts - 1, 0), 32))
        return (rng or random).uniform(0, ceiling)


def succeeded(status: int) -> bool:
    return 200 <= status < 300
