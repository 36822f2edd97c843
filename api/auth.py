"""Who is calling: bearer-token or API-key authentication for every route that is not
public, and one guard that checks each route's declared permission against the
permission table. A route that declares no permission is denied: a new route cannot
skip authorisation."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from application.authorization import Permission, authorize
from application.errors import AuthenticationFailed, PermissionDenied
from application.principal import Principal
from application.threads import in_thread
from infrastructure import logs
from infrastructure.api_key_secrets import KEY_PREFIX

PUBLIC_PATHS = [
    "^/health/?$",
    "^/health/(live|ready)/?$",
    "^/metrics/?$",  # open, or guarded by NORN_METRICS_TOKEN (api/controllers/metrics.py)
    "^/schema",
    "^/api/v1/auth/login$",
    "^/api/v1/auth/refresh$",
]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        container = connection.app.state.container
        sessions = container.sessions
        api_key = _presented_api_key(connection)
        acting_in = connection.headers.get("x-tenant-id")
        if api_key is not None:
            principal = await in_thread(sessions.principal_for_api_key, api_key)
            await container.api_key_usage.touch(UUID(principal.subject_id))
            logs.tenant_id.set(principal.tenant_id)  # this request's log lines
            return AuthenticationResult(user=principal, auth=None)
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "authentication required: send Authorization: Bearer <token> or X-API-Key"
            )
        # One thread hop for the token, its session, user and tenant (and X-Tenant-ID).
        principal = await in_thread(_user_principal, sessions, token.strip(), acting_in)
        logs.tenant_id.set(principal.tenant_id)  # this request's log lines
        return AuthenticationResult(user=principal, auth=None)


def _user_principal(sessions: Any, token: str, acting_in: str | None) -> Principal:
    principal: Principal = sessions.principal_for_token(token)
    if acting_in:
        principal = sessions.acting_in(principal, acting_in)
    return principal


def _presented_api_key(connection: ASGIConnection) -> str | None:
    """An API key sent as X-API-Key, or as a bearer token that starts with nrn_."""
    if "x-api-key" in connection.headers:
        return connection.headers["x-api-key"]
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
        return token.strip()
    return None


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
