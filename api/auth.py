"""Who is calling: bearer-token or API-key authentication for every route that is not
public, and one middleware that checks each route's declared permission against the
permission table. A route that declares no permission is denied: a new route cannot
skip authorisation."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import ValidationException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    ASGIMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Receive, Scope, Send

from api.ui.session import TENANT_COOKIE, cookie_principal, is_ui_path, session_cookie_of
from application.authorization import Permission, authorize
from application.errors import AuthenticationFailed, PermissionDenied
from application.principal import Principal
from application.threads import in_thread
from infrastructure import logs
from infrastructure.api_key_secrets import KEY_PREFIX

AUTHENTICATES_ITSELF = "exclude_from_auth"
"""The route opt (Litestar's own key: the middleware skips such a route) of a route that
authenticates in its handler: only the WebSocket feed (api/controllers/ws.py)."""

PUBLIC_PATHS = [
    "^/health/?$",
    "^/health/(live|ready)/?$",
    "^/metrics/?$",  # open, or guarded by NORN_METRICS_TOKEN (api/controllers/metrics.py)
    "^/schema",
    "^/api/v1/auth/login$",
    "^/api/v1/auth/refresh$",
    # The dashboard's sign-in form and its static files (api/ui/): not rate limited.
    "^/ui/login$",
    "^/ui/static/",
]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        principal = await authenticate(connection, touch=True)
        logs.tenant_id.set(principal.tenant_id)  # this request's log lines
        return AuthenticationResult(user=principal, auth=None)


@dataclass(frozen=True)
class Credentials:
    """What a connection presents other than in its headers: a WebSocket's first message
    or `?token=` (api/controllers/ws.py). A token that starts with nrn_ is an API key."""

    token: str | None = None
    api_key: str | None = None


async def authenticate(
    connection: ASGIConnection, *, touch: bool = False, credentials: Credentials | None = None
) -> Principal:
    """The principal of the connection's credentials as they stand now: what every request
    is authenticated with, and what a long-lived stream asks again to learn that they were
    revoked (AuthenticationFailed). `touch`: note an API key's use. `credentials`: those
    instead of the Authorization / X-API-Key headers."""
    container = connection.app.state.container
    authentication = container.authentication
    if credentials is None:
        api_key = _presented_api_key(connection)
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
    else:
        token = (credentials.token or "").strip()
        api_key = credentials.api_key or (token if token.startswith(KEY_PREFIX) else None)
    acting_in = connection.headers.get("x-tenant-id")
    if acting_in:
        _check_tenant_header(acting_in)
    if api_key is not None:
        principal: Principal = await authentication.principal_for_api_key_async(api_key)
        if touch:
            await container.api_key_usage.touch(UUID(principal.subject_id))
        return principal
    if not token and credentials is None and (cookie := session_cookie_of(connection)):
        # The dashboard's session cookie (api/ui/session.py): on /api/v1 only with its
        # CSRF header. On /ui a platform admin's chosen tenant is a cookie too.
        if not acting_in and is_ui_path(connection.scope["path"]):
            acting_in = connection.cookies.get(TENANT_COOKIE) or None
            if acting_in:
                _check_tenant_header(acting_in)
        return await in_thread(cookie_principal, connection, cookie, acting_in)
    if not token:
        raise AuthenticationFailed(
            "authentication required: send Authorization: Bearer <token> or X-API-Key"
        )
    # The token, its session, user and tenant: one query on the event loop (a thread
    # only for a stale cached copy, and for X-Tenant-ID's tenant).
    principal = await authentication.principal_for_token_async(token)
    if acting_in:
        principal = await in_thread(authentication.acting_in, principal, acting_in)
    return principal


def _check_tenant_header(raw: str) -> None:
    """A malformed header is the request's fault (400); a well-formed id of no tenant is a
    tenant that is not found (404), for a platform admin acting in it."""
    try:
        UUID(raw)
    except ValueError:
        message = "X-Tenant-ID must be a tenant's id (a UUID)"
        raise ValidationException(
            message, extra=[{"message": message, "key": "X-Tenant-ID", "source": "header"}]
        ) from None


def _presented_api_key(connection: ASGIConnection) -> str | None:
    """An API key sent as X-API-Key, or as a bearer token that starts with nrn_."""
    if "x-api-key" in connection.headers:
        return connection.headers["x-api-key"]
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
        return token.strip()
    return None


class PermissionMiddleware(ASGIMiddleware):
    """Every request (HTTP or WebSocket) needs the permission its route declares, checked
    once authentication has found the principal, before rate-limited work or an
    idempotent replay. A middleware, not a Litestar guard: Litestar copies the route
    handler for each guard call (`copy(self)`), 2% of an API process's CPU under load."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        check_permission(scope)
        await next_app(scope, receive, send)


def check_permission(scope: Scope) -> None:
    """What the route's `opt` declares: `public`, `authenticated`, a Permission, or that
    its handler authenticates itself (AUTHENTICATES_ITSELF)."""
    opt = scope["route_handler"].opt
    if opt.get(AUTHENTICATES_ITSELF):
        # A WebSocket may send its credentials in its first message, after this check:
        # its handler authenticates and calls `authorize` with its declared permission.
        return
    if opt.get("public") or scope.get("method") == "OPTIONS":
        # OPTIONS: Litestar's own answer, the methods a path allows (a CORS preflight
        # carries no credentials, so authentication lets it through too).
        return
    permission = opt.get("permission")
    if permission == "authenticated":
        return
    if not isinstance(permission, Permission):
        raise PermissionDenied("this route declares no permission")
    principal = scope.get("user")
    if not isinstance(principal, Principal):
        raise AuthenticationFailed("authentication required")
    authorize(principal, permission)


def principal_of(connection: ASGIConnection) -> Principal:
    user = connection.user
    assert isinstance(user, Principal)
    return user
