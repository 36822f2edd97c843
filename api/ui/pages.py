"""Sign-in, sign-out and a platform admin's choice of tenant. Signing in is the API's
login (application/sessions.py, throttled by application/logins.py): the same users,
password checks, throttle and messages; only the tokens travel in a cookie."""

from __future__ import annotations

from typing import Annotated, Any, get_args
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery

from api.auth import principal_of
from api.controllers.auth import _correlation
from api.controllers.common import MinPosition, command_context
from api.controllers.paging import query_error
from api.dependencies import (
    LoginServiceDep,
    ReadYourWritesDep,
    SessionServiceDep,
    TenantQueriesDep,
    TenantServiceDep,
)
from api.schemas.tenants import Plan, TenantCreate
from api.ui.session import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    TENANT_COOKIE,
    CookieSession,
    is_https,
    new_login_csrf,
    set_cookie,
)
from api.ui.views import clear_cookies, page, read_form, redirect
from application.authorization import Permission
from application.errors import AuthenticationFailed, NotFound, PermissionDenied, RateLimited
from application.principal import Principal
from application.tenants import QuotaUsage

PUBLIC = {"public": True}
SIGNED_IN = {"permission": "authenticated"}
Form = Body(media_type=RequestEncodingType.URL_ENCODED)
_TENANTS_PER_PAGE = 50  # each shown with its usage: a few counts per tenant


def _safe_next(raw: str | None) -> str:
    """Only a dashboard path: never an open redirect to another site."""
    if raw and raw.startswith("/ui/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/ui/pipelines"


class SessionPages(Controller):
    path = "/ui"
    include_in_schema = False

    @get("/", opt=SIGNED_IN)
    async def home(self, request: Request) -> Response[Any]:
        return redirect(request, "/ui/pipelines")

    @get("/login", opt=PUBLIC)
    async def login_form(self, request: Request, next: FromQuery[str | None] = None) -> Response:
        return _login_page(request, _safe_next(next))

    @post("/login", opt=PUBLIC, status_code=303)
    async def login(
        self,
        request: Request,
        sessions: SessionServiceDep,
        logins: LoginServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        username, password = data.get("username", ""), data.get("password", "")
        target = _safe_next(data.get("next"))
        if not username or not password:
            return _login_page(request, target, "enter a username and a password", 400, username)
        address = request.client.host if request.client else "unknown"
        correlation = _correlation(request)  # as the API's login (no principal yet)
        try:
            issued = await logins.throttled(
                username, address, lambda: sessions.login(username, password, correlation)
            )
        except AuthenticationFailed as refused:
            return _login_page(request, target, str(refused), 401, username)
        except RateLimited as refused:
            shown = _login_page(request, target, str(refused), 429, username)
            shown.headers["Retry-After"] = str(max(1, int(refused.retry_after) + 1))
            return shown
        response = redirect(request, target)
        secure = is_https(request)
        cookie = CookieSession.of(issued).encode()
        set_cookie(response, SESSION_COOKIE, cookie, secure=secure)
        set_cookie(response, LOGIN_CSRF_COOKIE, "", secure=secure, max_age=0)
        return response

    @post("/logout", opt=SIGNED_IN, status_code=303)
    async def logout(self, request: Request, sessions: SessionServiceDep) -> Response[Any]:
        await sessions.logout(principal_of(request), command_context(request).correlation_id)
        return clear_cookies(redirect(request, "/ui/login"), is_https(request))

    @get("/tenants", opt={"permission": Permission.TENANTS_MANAGE})
    async def tenants(
        self,
        request: Request,
        tenant_queries: TenantQueriesDep,
        tenants: TenantServiceDep,
        read_your_writes: ReadYourWritesDep,
        cursor: FromQuery[str | None] = None,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        """A platform admin's tenants, each with its usage against its quotas (the
        API's GET /tenants/{id}/usage: TenantService.usage) and a switch to act in it
        (as X-Tenant-ID does on the API)."""
        await read_your_writes("tenants", min_position)
        try:
            result = await tenant_queries.list(limit=_TENANTS_PER_PAGE, cursor=cursor or None)
        except ValueError as error:
            raise query_error(error) from None
        principal = principal_of(request)
        shown = [(row, await _usage(tenants, principal, row["id"])) for row in result.items]
        next_link = f"/ui/tenants?{urlencode({'cursor': result.next_cursor})}"
        return page(
            request,
            "tenants.html",
            tenants=shown,
            next_link=next_link if result.next_cursor else None,
            first_page=cursor is None,
            plans=get_args(Plan),
        )

    @post("/tenants", opt={"permission": Permission.TENANTS_MANAGE}, status_code=303)
    async def create_tenant(
        self, request: Request, tenants: TenantServiceDep, data: Annotated[dict[str, str], Form]
    ) -> Response[Any]:
        """A new tenant (POST /api/v1/tenants, its schema and messages), then acting in
        it: on a fresh install the first thing a platform admin needs."""
        fields = {k: data[k].strip() for k in ("name", "plan", "description") if data.get(k)}
        body = read_form(fields, TenantCreate)
        result = await tenants.create(
            principal_of(request),
            name=body.name,
            description=body.description,
            plan=body.plan,
            labels=body.labels,
            owner=body.owner,
            ctx=command_context(request),
        )
        response = redirect(request, f"/ui/tenants?min_position={result.position or 0}")
        set_cookie(response, TENANT_COOKIE, str(result.state.id), secure=is_https(request))
        return response

    @post("/tenant", opt=SIGNED_IN, status_code=303)
    async def choose_tenant(
        self,
        request: Request,
        tenant_queries: TenantQueriesDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        """A platform admin acts in one tenant (X-Tenant-ID on the API), or in none."""
        principal = principal_of(request)
        if not principal.is_platform_admin:
            raise PermissionDenied("only a platform admin switches between tenants")
        chosen = data.get("tenant_id", "").strip()
        response = redirect(request, "/ui/pipelines")
        secure = is_https(request)
        if not chosen:
            set_cookie(response, TENANT_COOKIE, "", secure=secure, max_age=0)
            return response
        if await tenant_queries.get(_uuid(chosen)) is None:
            raise NotFound("tenant", chosen)
        set_cookie(response, TENANT_COOKIE, chosen, secure=secure)
        return response


async def _usage(
    tenants: Any, principal: Principal, tenant_id: Any
) -> list[tuple[str, QuotaUsage]] | None:
    """Each quota's (name, limit and use); None for a deleted tenant (it has none)."""
    try:
        _, usage = await tenants.usage(principal, UUID(str(tenant_id)))
    except NotFound:
        return None
    return list(usage.items())


def _uuid(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("tenant", raw) from None


def _login_page(
    request: Request, target: str, error: str | None = None, status: int = 200, username: str = ""
) -> Response[Any]:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_csrf()
    shown = page(
        request,
        "login.html",
        status=status,
        login_csrf=token,
        csrf_field=CSRF_FIELD,
        next=target,
        error=error,
        username=username,
    )
    # Not HttpOnly would not matter (it is echoed in the form), but nothing reads it.
    set_cookie(shown, LOGIN_CSRF_COOKIE, token, secure=is_https(request))
    return shown
