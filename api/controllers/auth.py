from __future__ import annotations

import asyncio

from litestar import Controller, Request, get, post
from litestar.params import JSONBody

from api.auth import principal_of
from api.controllers.common import ContainerDep
from api.schemas.identity import LoginRequest, MeOut, TokenOut


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post(
        "/login", opt={"public": True}, status_code=200, summary="Exchange credentials for tokens"
    )
    async def login(self, data: JSONBody[LoginRequest], container: ContainerDep) -> TokenOut:
        user = await asyncio.to_thread(
            container.identity.authenticate, data.username, data.password
        )
        identity = {"username": user.username, "tenant_id": user.tenant_id, "roles": user.roles}
        tokens = container.tokens
        return TokenOut(
            access_token=tokens.issue(str(user.id), "access", **identity),
            refresh_token=tokens.issue(str(user.id), "refresh", **identity),
            token_type="bearer",  # noqa: S106 - the OAuth2 token type, not a secret
            expires_in=tokens.access_ttl,
        )

    @get("/me", opt={"permission": "authenticated"}, summary="Who the token belongs to")
    async def me(self, request: Request) -> MeOut:
        principal = principal_of(request)
        return MeOut(
            id=principal.subject_id,
            username=principal.name,
            tenant_id=principal.tenant_id,
            roles=sorted(principal.roles),
        )
