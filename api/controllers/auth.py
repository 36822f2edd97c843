"""/api/v1/auth: log in (throttled), refresh with rotating refresh tokens, log out, and
who am I."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.params import JSONBody

from api.auth import principal_of
from api.controllers.common import command_context
from api.dependencies import LoginServiceDep, SessionServiceDep
from api.schemas.auth import LoginRequest, MeOut, RefreshRequest, TokenOut
from application.sessions import IssuedTokens

PUBLIC = {"public": True}


def _tokens(issued: IssuedTokens) -> TokenOut:
    return TokenOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        token_type="bearer",  # noqa: S106 - the OAuth2 token type, not a secret
        expires_in=issued.expires_in,
    )


def _correlation(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id") or ""
    return (request.headers.get("x-correlation-id") or rid)[:128]


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/login", opt=PUBLIC, status_code=200, summary="Exchange credentials for tokens")
    async def login(
        self,
        data: JSONBody[LoginRequest],
        request: Request,
        sessions: SessionServiceDep,
        logins: LoginServiceDep,
    ) -> TokenOut:
        address = request.client.host if request.client else "unknown"
        correlation = _correlation(request)
        issued = await logins.throttled(
            data.username,
            address,
            lambda: sessions.login(data.username, data.password, correlation),
        )
        return _tokens(issued)

    @post(
        "/refresh",
        opt=PUBLIC,
        status_code=200,
        summary="New tokens for a refresh token (each refresh token works once)",
    )
    async def refresh(
        self, data: JSONBody[RefreshRequest], request: Request, sessions: SessionServiceDep
    ) -> TokenOut:
        return _tokens(await sessions.refresh(data.refresh_token, _correlation(request)))

    @post(
        "/logout",
        opt={"permission": "authenticated"},
        status_code=204,
        summary="End this session: its access and refresh tokens stop working at once",
    )
    async def logout(self, request: Request, sessions: SessionServiceDep) -> None:
        await sessions.logout(principal_of(request), command_context(request).correlation_id)

    @get("/me", opt={"permission": "authenticated"}, summary="Who the credentials belong to")
    async def me(self, request: Request) -> MeOut:
        principal = principal_of(request)
        return MeOut(
            id=principal.subject_id,
            username=principal.name,
            tenant_id=principal.tenant_id,
            roles=sorted(principal.roles),
            kind=principal.kind,
        )
