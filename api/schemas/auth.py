from __future__ import annotations

from typing import Annotated

import msgspec

from api.schemas.common import Request


class LoginRequest(Request):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class RefreshRequest(Request):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


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
    kind: str
    """user or api_key"""
