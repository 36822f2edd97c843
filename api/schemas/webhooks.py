"""Bodies of /api/v1/webhooks (api/controllers/webhooks.py). The signing secret is in a
create's request and in its answer only (`WebhookCreated`), never in a read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from api.schemas.common import CursorPage, Request

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Globs = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]],
    msgspec.Meta(min_length=1, max_length=50),
]
Description = Annotated[str, msgspec.Meta(max_length=1000)]


class WebhookCreate(Request):
    url: Url
    events: Globs
    """CloudEvents types or globs of them, e.g. ["norn.run.*", "norn.deployment.*"]."""
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    """The signing secret; Norn makes one (and answers it once) when none is given."""
    description: Description = ""
    active: bool = True


class WebhookUpdate(Request):
    """The fields to change; those left out stay as they are."""

    url: Url | None = None
    events: Globs | None = None
    description: Description | None = None
    active: bool | None = None
    """false stops deliveries; true resumes them (also after Norn disabled the webhook)."""


class SecretRotation(Request):
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    """The new signing secret; Norn makes one (and answers it once) when none is given."""


class WebhookRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    url: str
    events: list[str]
    description: str
    active: bool
    disabled_reason: str | None
    """Why Norn disabled it (e.g. 20 consecutive failed deliveries); null otherwise."""
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookWritten(msgspec.Struct, kw_only=True):
    """A command's answer: the webhook as its append left it."""

    id: str
    tenant_id: str
    url: str
    events: list[str]
    description: str
    active: bool
    disabled_reason: str | None
    version: int
    position: int | None
    changed: bool


class WebhookCreated(WebhookWritten, kw_only=True):
    secret: str
    """Shown this once: keep it to verify X-Norn-Signature."""


class WebhookDeletedOut(msgspec.Struct):
    id: str
    deleted: bool
    version: int
    position: int | None


class WebhookPage(CursorPage, kw_only=True):
    items: list[WebhookRead]


class DeliveryRead(msgspec.Struct, kw_only=True):
    id: str
    """The X-Norn-Delivery header of every attempt."""
    webhook_id: str
    event_id: str
    event_type: str
    event_time: datetime
    position: int | None
    status: str
    """pending, failed (another attempt is due at next_attempt_at), delivered, dead."""
    attempts: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_code: int | None
    response_ms: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryPage(CursorPage, kw_only=True):
    items: list[DeliveryRead]


class DeliveryQueued(msgspec.Struct, kw_only=True):
    webhook_id: str
    delivery_id: str
    status: str
