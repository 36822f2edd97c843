"""The dashboard's cookie session: the API's own login session (application/sessions.py)
carried in an httpOnly cookie instead of an Authorization header, and the CSRF token
that must accompany it.

- The cookie holds the session's access and refresh tokens. When the access token has
  expired the server refreshes it with the API's refresh (rotating) and sends the new
  pair back; concurrent requests presenting the same spent pair share one refresh
  (`_Refreshes`), so the session's reuse detection is not tripped by the browser's own
  parallel requests. With several API processes behind a balancer, two processes
  refreshing the same pair at once end the session (the user signs in again): the
  reuse detection working as designed, never a second life for a token.
- CSRF: a synchronizer token derived from the session id with a server key (HMAC), so it
  changes with every session and needs no storage. Every state-changing /ui request
  carries it (form field or header); every /api/v1 request that authenticates with the
  cookie carries it as X-CSRF-Token, whatever its method. Before sign-in, the login form
  uses a double-submit token (a random cookie echoed in the form).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection

from application.authentication import RequestAuthentication
from application.errors import AuthenticationFailed, PermissionDenied
from application.principal import Principal
from application.sessions import IssuedTokens, SessionService

SESSION_COOKIE = "norn_session"
LOGIN_CSRF_COOKIE = "norn_login_csrf"
TENANT_COOKIE = "norn_tenant"
"""The tenant a platform admin acts in on the dashboard (the API's X-Tenant-ID)."""
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SET_COOKIE_STATE = "ui_set_cookie"
"""Where a renewed session cookie waits in the request's state for the response."""
CSRF_STATE = "ui_csrf"
NO_RENEWAL_STATE = "ui_no_renewal"
"""Set by a stream whose answer has started: its rechecks must not renew the cookie."""
_SEPARATOR = "~"  # not in a JWT's alphabet (base64url and dots), allowed in a cookie
_REFRESH_KEPT = 60.0  # seconds a refresh's outcome is shared with late concurrent requests
_ENDED = "your dashboard session has ended; sign in again"


@dataclass(frozen=True)
class CookieSession:
    access_token: str
    refresh_token: str

    def encode(self) -> str:
        return f"{self.access_token}{_SEPARATOR}{self.refresh_token}"

    @classmethod
    def decode(cls, raw: str) -> CookieSession | None:
        access, sep, refresh = raw.partition(_SEPARATOR)
        if not sep or not access or not refresh:
            return None
        return cls(access, refresh)

    @classmethod
    def of(cls, issued: IssuedTokens) -> CookieSession:
        return cls(issued.access_token, issued.refresh_token)


def csrf_token(key: bytes, session_id: str) -> str:
    return hmac.new(key, f"session:{session_id}".encode(), hashlib.sha256).hexdigest()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def same_token(presented: str | None, expected: str) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented), expected)


class _Refreshes:
    """One refresh per spent cookie at a time, its outcome kept a short while: the
    browser sends a page's requests in parallel, and each must not refresh on its own
    (the second would present a spent refresh token and end the session)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[str, tuple[float, CookieSession]] = {}

    def refresh(self, sessions: SessionService, refresh_token: str) -> CookieSession:
        with self._lock:  # runs in a worker thread: a blocking lock is right here
            now = time.monotonic()
            for token, (at, _) in list(self._done.items()):
                if now - at > _REFRESH_KEPT:
                    del self._done[token]
            if refresh_token in self._done:
                return self._done[refresh_token][1]
            renewed = CookieSession.of(sessions.refresh(refresh_token, "dashboard"))
            self._done[refresh_token] = (now, renewed)
            return renewed


_refreshes = _Refreshes()


def cookie_principal(
    connection: ASGIConnection, raw_cookie: str, acting_in: str | None
) -> Principal:
    """The principal of a session cookie (blocking: call it in a thread), renewing its
    tokens when the access token has expired; the renewed cookie and the session's CSRF
    token are left in the request's state. /api/v1 requests must present that token."""
    container: Any = connection.app.state.container
    sessions: SessionService = container.sessions
    authentication: RequestAuthentication = container.authentication
    cookie = CookieSession.decode(raw_cookie)
    if cookie is None:
        raise AuthenticationFailed(_ENDED)
    try:
        principal = authentication.principal_for_token(cookie.access_token)
    except AuthenticationFailed:
        # Expired, or the session ended: a refresh tells which (it fails for an ended one).
        # Only where the renewed cookie can reach the browser: a /ui answer not yet
        # started. Elsewhere the browser would keep presenting the spent refresh token.
        state = connection.scope["state"]
        if not is_ui_path(connection.scope["path"]) or state.get(NO_RENEWAL_STATE):
            raise AuthenticationFailed(_ENDED) from None
        try:
            cookie = _refreshes.refresh(sessions, cookie.refresh_token)
            principal = authentication.principal_for_token(cookie.access_token)
        except AuthenticationFailed:
            raise AuthenticationFailed(_ENDED) from None
        connection.scope["state"][SET_COOKIE_STATE] = cookie.encode()
    expected = csrf_token(container.tokens.derived_key("ui-csrf"), principal.session_id or "")
    connection.scope["state"][CSRF_STATE] = expected
    if not is_ui_path(connection.scope["path"]):
        # An /api/v1 route: the cookie alone could be a cross-site request's.
        if not same_token(connection.headers.get(CSRF_HEADER), expected):
            raise PermissionDenied(
                "a request authenticated by the dashboard's cookie must send its CSRF token "
                "in the X-CSRF-Token header"
            )
    if acting_in:
        principal = authentication.acting_in(principal, acting_in)
    return principal


def is_ui_path(path: str) -> bool:
    """The dashboard's own routes, its home `/ui` included (not a prefix like /uix)."""
    return path == "/ui" or path.startswith("/ui/")


def session_cookie_of(connection: ASGIConnection) -> str | None:
    return connection.cookies.get(SESSION_COOKIE) or None


def is_https(connection: ASGIConnection) -> bool:
    """Served over HTTPS, directly or behind a proxy that says so."""
    forwarded = connection.headers.get("x-forwarded-proto", "")
    return connection.scope.get("scheme") == "https" or forwarded.lower() == "https"


def set_cookie(
    response: Any, name: str, value: str, *, secure: bool, max_age: int | None = None
) -> None:
    """The same attributes as `cookie_header`, on a Litestar response."""
    response.set_cookie(
        key=name,
        value=value,
        path="/",
        httponly=True,
        secure=secure,
        samesite="lax",
        max_age=max_age,
    )


def cookie_header(
    name: str, value: str, *, secure: bool, max_age: int | None = None, http_only: bool = True
) -> str:
    """A Set-Cookie value: httpOnly (the page's scripts never see it), SameSite=Lax
    (sent on top-level navigations to the dashboard, never on cross-site POSTs), Secure
    over HTTPS."""
    parts = [f"{name}={value}", "Path=/", "SameSite=Lax"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)
