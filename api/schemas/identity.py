from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from api.schemas.common import Request


class LoginRequest(Request):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class TokenOut(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class MeOut(msgspec.Struct):
    id: str
    username: str
    tenant_id: str | None
    roles: list[str]


class TenantCreate(Request):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    plan: Literal["free", "pro", "enterprise"] = "free"
    labels: dict[str, str] = {}


class TenantRead(msgspec.Struct):
    id: str
    name: str
    description: str
    plan: str
    status: str
    labels: dict[str, str]
    created_at: datetime


class TenantWritten(TenantRead):
    version: int
    position: int | None


class TenantPage(msgspec.Struct):
    items: list[TenantRead]
    next_cursor: str | None


class UserCreate(Request):
    username: Annotated[str, msgspec.Meta(min_length=3, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    tenant_id: str | None = None
    roles: list[Literal["platform_admin", "admin", "editor", "operator", "viewer"]] = msgspec.field(
        default_factory=lambda: ["viewer"]
    )


class UserWritten(msgspec.Struct):
    id: str
    username: str
    tenant_id: str | None
    roles: list[str]
    version: int
    position: int | None
