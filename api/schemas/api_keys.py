from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from api.schemas.common import CursorPage, Request

# platform_admin is accepted here so that asking for it is refused as PERMISSION_DENIED
# (403) by the service, like any other escalation, rather than as a schema error.
Role = Literal["platform_admin", "admin", "editor", "operator", "viewer"]


class ApiKeyCreate(Request):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    roles: list[Role]
    expires_at: datetime | None = None


class ApiKeyRead(msgspec.Struct, kw_only=True):
    """Metadata only: the key itself is shown once, by the create response."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    roles: list[str]
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked: bool
    revoked_at: datetime | None


class ApiKeyIssued(ApiKeyRead, kw_only=True):
    key: str
    """nrn_<prefix>_<secret>: store it now, it cannot be shown again."""
    version: int
    position: int | None


class ApiKeyPage(CursorPage, kw_only=True):
    items: list[ApiKeyRead]
