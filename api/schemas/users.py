from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from api.schemas.common import CursorPage, Request

# platform_admin is accepted here so that asking for it is refused as PERMISSION_DENIED
# (403) by the service, like any other escalation, rather than as a schema error.
Role = Literal["platform_admin", "admin", "editor", "operator", "viewer"]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class UserCreate(Request):
    username: Annotated[str, msgspec.Meta(min_length=3, max_length=64)]
    password: Password
    tenant_id: str | msgspec.UnsetType | None = msgspec.UNSET
    """Absent: the caller's own tenant. null: none (platform admins only)."""
    roles: list[Role] = msgspec.field(default_factory=lambda: ["viewer"])


class UserUpdate(Request):
    """PUT /users/{id}: the fields given change, the others stay."""

    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=5)] | None = None
    active: bool | None = None


class PasswordChange(Request):
    new_password: Password
    current_password: Password | None = None
    """Required when changing one's own password."""


class UserRead(msgspec.Struct, kw_only=True):
    id: str
    username: str
    tenant_id: str | None
    roles: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int


class UserWritten(UserRead, kw_only=True):
    position: int | None


class UserPage(CursorPage, kw_only=True):
    items: list[UserRead]
