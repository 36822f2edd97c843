"""Who is calling: bearer-token authentication for every route that is not public, and
one guard that checks each route's declared permission against the permission table.
A route that declares no permission is denied: a new route cannot skip authorisation."""

from __future__ import annotations

import asyncio
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from application.authorization import Permission, authorize
from application.errors import AuthenticationFailed, NotFound, PermissionDenied
from application.principal import Principal

PUBLIC_PATHS = ["^/health", "^/schema", "^/api/v1/auth/login$"]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        container = connection.app.state.container
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "authentication required: send Authorization: Bearer <token>"
            )
        claims = container.tokens.verify(token.strip())
        principal = Principal(
            subject_id=claims.subject,
            name=claims.username,
            tenant_id=claims.tenant_id,
            roles=frozenset(claims.roles),
        )
        acting_in = connection.headers.get("x-tenant-id")
        if acting_in and principal.is_platform_admin:
            principal = principal.acting_in(await _existing_tenant(container, principal, acting_in))
        return AuthenticationResult(user=principal, auth=claims)


async def _existing_tenant(container: object, principal: Principal, raw: str) -> str:
    try:
        tenant_id = UUID(raw)
    except ValueError:
        raise NotFound("tenant", raw) from None
    await asyncio.to_thread(container.identity.get_tenant, principal, tenant_id)  # type: ignore[attr-defined]
    return str(tenant_id)


def permission_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    if handler.opt.get("public"):
        return
    permission = handler.opt.get("permission")
    if permission == "authenticated":
        return
    if not isinstance(permission, Permission):
        raise PermissionDenied("this route declares no permission")
    authorize(connection.user, permission)


def principal_of(connection: ASGIConnection) -> Principal:
    user = connection.user
    assert isinstance(user, Principal)
    return user
