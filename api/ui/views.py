"""What every dashboard page shares: the page context (who is signed in, what their role
may do, the CSRF token, a platform admin's tenants), the CSRF guard on state-changing
requests, and errors shown as pages with the API's own messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from litestar.types import ASGIApp, Receive, Scope, Send

from api.errors import EXCEPTION_HANDLERS
from api.ui.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    CSRF_STATE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SET_COOKIE_STATE,
    TENANT_COOKIE,
    cookie_header,
    is_https,
    same_token,
    set_cookie,
)
from api.visualize import StepNode, dependency_levels, format_duration
from application.authorization import Permission, authorize
from application.errors import AuthenticationFailed, PermissionDenied
from application.principal import Principal

UI = Path(__file__).parent
TEMPLATES = UI / "templates"
STATIC = UI / "static"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def may(principal: Principal, permission: Permission) -> bool:
    """Whether to offer an action: the same rule the route's guard applies."""
    try:
        authorize(principal, permission)
    except PermissionDenied:
        return False
    return True


def page(request: Request, template: str, status: int = 200, **context: Any) -> Template:
    user = request.scope.get("user")  # absent on public routes
    principal = user if isinstance(user, Principal) else None
    return Template(
        template_name=template,
        status_code=status,
        context={
            "principal": principal,
            "csrf": request.scope.get("state", {}).get(CSRF_STATE, ""),
            "can": (lambda p: may(principal, Permission(p))) if principal else (lambda p: False),
            "path": request.url.path,
            "duration": format_duration,
            **context,
        },
    )


def graph(steps: list[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Steps by dependency level (api/visualize.py: the order they can run in), each as
    the dict it came as; and apart those in a cycle (none in a valid definition)."""
    nodes = [StepNode(s["name"], s["plugin"], tuple(s.get("depends_on") or ())) for s in steps]
    by_node = {id(n): s for n, s in zip(nodes, steps, strict=True)}
    levels, unordered = dependency_levels(nodes)
    return [[by_node[id(n)] for n in level] for level in levels], [
        by_node[id(n)] for n in unordered
    ]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


async def csrf_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Every state-changing /ui request carries the session's CSRF token (the form field
    or the X-CSRF-Token header htmx sends); the login form its double-submit token."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    presented = connection.headers.get(CSRF_HEADER)
    if not presented:
        form = await Request(connection.scope, connection.receive).form()  # body is kept
        presented = form.get(CSRF_FIELD)
    if handler.opt.get("public"):  # the login form: no session yet
        expected = connection.cookies.get(LOGIN_CSRF_COOKIE, "")
    else:
        expected = connection.scope.get("state", {}).get(CSRF_STATE, "")
    if not expected or not same_token(presented, expected):
        raise PermissionDenied(
            "the form's CSRF token is missing or does not match; reload the page and retry"
        )


class RenewedCookie(ASGIMiddleware):
    """A session cookie renewed during authentication goes back with the answer,
    whatever it is (a page, a redirect, an error page)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        async def send_renewed(message: Any) -> None:
            renewed = scope.get("state", {}).get(SET_COOKIE_STATE)
            if message["type"] == "http.response.start" and renewed:
                value = cookie_header(SESSION_COOKIE, renewed, secure=_https(scope))
                headers = [*message.get("headers", []), (b"set-cookie", value.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await next_app(scope, receive, send_renewed)


def _https(scope: Scope) -> bool:
    forwarded = dict(scope.get("headers", [])).get(b"x-forwarded-proto", b"")
    return scope.get("scheme") == "https" or forwarded.lower() == b"https"


S = TypeVar("S", bound=msgspec.Struct)


def read_form(fields: dict[str, Any], schema: type[S]) -> S:
    """The form's fields read as the API reads the same JSON body: a bad field is the
    API's 422 with the same field and message (api/errors.py words it)."""
    try:
        return msgspec.convert(fields, schema)
    except msgspec.ValidationError as error:
        raise ValidationException(
            "Validation failed", extra=[{"message": str(error), "key": "data", "source": "body"}]
        ) from None


def form_number(raw: str) -> int | str | None:
    """A form's number as a JSON body would carry it: digits as a number, anything else
    as typed for the schema to word, nothing as null."""
    raw = raw.strip()
    return int(raw) if raw.isdigit() else (raw or None)


def run_params(data: dict[str, str]) -> tuple[str, dict[str, Any] | None, str | None]:
    """A Run form's params text, as typed: (the text, its object, None), or (the text,
    None, what is wrong with it), which is a 422 like a body's bad field."""
    raw = data.get("params", "").strip() or "{}"
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as error:
        return raw, None, f"params: not JSON ({error.msg} at line {error.lineno})"
    if not isinstance(params, dict):
        return raw, None, "params: must be a JSON object"
    return raw, params, None


def strategy_fields(data: dict[str, str]) -> dict[str, Any] | None:
    """The strategy of a deploy or release form (_strategy_fields.html) as the API's
    StrategyIn body; None when the deployment's own is chosen."""
    kind = data.get("strategy", "").strip()
    if not kind:
        return None
    return {"type": kind, "verification_timeout": form_number(data.get("verification_timeout", ""))}


def fragment(request: Request, template: str, **context: Any) -> str:
    """A fragment (no page around it) with a page's context (csrf, can, duration): what
    a live stream sends (api/ui/live.py)."""
    shown = page(request, template, **context)
    return request.app.template_engine.get_template(template).render(**shown.context)


def redirect(request: Request, to: str) -> Response[Any]:
    """303 to `to`; htmx follows HX-Redirect instead (it would swap the page in)."""
    if request.headers.get("hx-request"):
        return Response(None, status_code=204, headers={"HX-Redirect": to})
    return Redirect(to, status_code=HTTP_303_SEE_OTHER)


def clear_cookies(response: Response[Any], secure: bool) -> Response[Any]:
    for name in (SESSION_COOKIE, TENANT_COOKIE):
        set_cookie(response, name, "", secure=secure, max_age=0)
    return response


def _api_handler(exc: Exception) -> Any:
    for kind in type(exc).__mro__:
        if kind in EXCEPTION_HANDLERS:
            return EXCEPTION_HANDLERS[kind]
    return EXCEPTION_HANDLERS[Exception]


def _error_body(answer: Response[Any]) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(answer.content)["error"]
    return body


def api_error(request: Request, exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and error body (code, message, details) the API answers for `exc`:
    for a form that shows the refusal above what was typed instead of an error page."""
    answer = _api_handler(exc)(request, exc)
    return answer.status_code, _error_body(answer)


def ui_error(request: Request, exc: Exception) -> Response[Any]:
    """An error as a page: the status, code and message the API would answer (one
    mapping, api/errors.py); a request without a live session goes to the sign-in page."""
    if isinstance(exc, AuthenticationFailed) or getattr(exc, "status_code", None) == 401:
        target = request.url.path if request.method == "GET" else "/ui"
        response = redirect(request, f"/ui/login?next={quote(target)}")
        if request.cookies.get(SESSION_COOKIE):
            clear_cookies(response, is_https(request))  # ended: drop it, sign in afresh
        return response
    answer = _api_handler(exc)(request, exc)
    shown = page(request, "error.html", status=answer.status_code, error=_error_body(answer))
    for name, value in answer.headers.items():
        if name.lower() in ("retry-after", "www-authenticate"):
            shown.headers[name] = value
    return shown
