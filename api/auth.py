"""Who is calling: bearer-token or API-key authentication for every route that is not
public, and
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
from infrastructure.api_key_secrets import KEY_PREFIX

PUBLIC_PATHS = ["^/health", "^/schema", "^/api/v1/auth/login$"]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        container = connection.app.state.container
        api_key = _presented_api_key(connection)
        if api_key is not None:
            return await _api_key_principal(container, api_key)
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "authentication required: send Authorization: Bearer <token> or X-API-Key"
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


def _presented_api_key(connection: ASGIConnection) -> str | None:
    """An API key sent as X-API-Key, or as a bearer token that starts with nrn_."""
    if "x-api-key" in connection.headers:
        return connection.headers["x-api-key"]
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
        return token.strip()
    return None


async def _api_key_principal(container: object, presented: str) -> AuthenticationResult:
    # Loaded from the event store on every request: a revoked key fails at once.
    api_key = await asyncio.to_thread(container.api_keys.authenticate, presented)  # type: ignore[attr-defined]
    await container.api_key_usage.touch(api_key.id)  # type: ignore[attr-defined]
    principal = Principal(
        subject_id=str(api_key.id),
        name=api_key.name,
        tenant_id=api_key.tenant_id,
        roles=frozenset(api_key.roles),
        kind="api_key",
    )
    return AuthenticationResult(user=principal, auth=api_key)


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
