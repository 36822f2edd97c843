"""The Litestar app factory."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import Receive, Scope, Send

from api import dependency_resolution
from api.auth import PUBLIC_PATHS, BearerAuthMiddleware, PermissionMiddleware
from api.bootstrap import Container, Roles, connect_feed
from api.controllers.api_keys import ApiKeyController
from api.controllers.audit import AuditController, ResourceEventsController
from api.controllers.audit_params import provide_audit_query
from api.controllers.auth import AuthController
from api.controllers.authoring import AuthoringController
from api.controllers.batch import BatchController
from api.controllers.connections import ConnectionController, ConnectorController
from api.controllers.deployments import DeploymentController
from api.controllers.events import EventStreamController
from api.controllers.health import HealthController
from api.controllers.health_details import HealthDetailsController
from api.controllers.jobs import JobController, SchedulerTimelineController
from api.controllers.metrics import MetricsController
from api.controllers.paging import provide_paging
from api.controllers.pipeline_deploys import PipelineDeployController
from api.controllers.pipeline_runs import PipelineRunController
from api.controllers.pipelines import PipelineController
from api.controllers.plugins import PluginController
from api.controllers.run_reports import RunReportController
from api.controllers.runs import RunController
from api.controllers.secrets import SecretController
from api.controllers.tenants import TenantController
from api.controllers.users import UserController
from api.controllers.webhooks import WebhookController
from api.controllers.ws import EventSocketController
from api.dependencies import ReadYourWrites
from api.errors import EXCEPTION_HANDLERS
from api.idempotency import IdempotencyMiddleware
from api.mcp_server import McpEndpoint
from api.openapi import DOCS_ASSETS, describe_once, docs_assets
from api.query_rules import QueryRules
from api.rate_limit import STATE_KEY as RATE_LIMIT_HEADERS
from api.rate_limit import RateLimitMiddleware
from api.ui.router import template_config as ui_template_config
from api.ui.router import ui_router
from application.threads import Threaded
from infrastructure import logs
from infrastructure.metrics import UNMATCHED_ROUTE, NornMetrics, command_observer

# POST /api/v1/pipelines/{id}:rollback is the custom-method spelling of .../{id}/rollback.
_CUSTOM_METHOD = re.compile(r"^(/api/v1/[a-z-]+/[^/]+(?:/[a-z-]+/[^/]+)?):([a-z_-]+)$")
# Custom methods whose sub-path is spelled otherwise: {id}:run queues a run, .../runs.
_ACTION_PATHS = {"run": "runs"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DASHBOARD = "/ui"
DASHBOARD_FILES = "/ui/static/"
PAGE_HEADERS = (
    # No other site may frame the dashboard: signed in under another site's page, it is
    # one click from Cancel, Retry, Roll back or Delete (clickjacking). Here, so that
    # every answer has them, the sign-in redirects of the authentication middleware too.
    (b"content-security-policy", b"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class NornApp(Litestar):
    """Litestar, plus what must happen around routing: the `:action` path spelling, a
    request id on every request, response and log line, the HTTP metrics, and the
    dashboard's security headers."""

    metrics: NornMetrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await super().__call__(scope, receive, send)
            return
        match = _CUSTOM_METHOD.match(scope["path"])
        if match:
            action = _ACTION_PATHS.get(match.group(2), match.group(2))
            scope["path"] = f"{match.group(1)}/{action}"  # type: ignore[typeddict-item]
        request_id = _incoming_request_id(scope) or uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id  # type: ignore[typeddict-item]
        logged_as = logs.request_id.set(request_id)  # every log line of this request
        tenant_logged = logs.tenant_id.set(None)  # set by authentication
        started = time.perf_counter()
        status: int | None = None  # until the app answers
        dashboard = scope["path"].startswith(DASHBOARD)

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(scope["state"].get(RATE_LIMIT_HEADERS, ()))  # type: ignore[typeddict-item]
                if dashboard:
                    headers.extend(PAGE_HEADERS)
                    page = not scope["path"].startswith(DASHBOARD_FILES)
                    if page and not any(k.lower() == b"cache-control" for k, _ in headers):
                        # A signed-in page (its CSRF token in it) stays out of caches and
                        # the back button's history once the session has ended.
                        headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        # A WebSocket's messages pass straight through: the wrapper has nothing to add to
        # them, and a feed sends one per event per socket.
        try:
            await super().__call__(
                scope, receive, send_with_id if scope["type"] == "http" else send
            )
        except asyncio.CancelledError:
            status = status or 499  # the client went away before an answer (nginx's code)
            raise
        finally:
            logs.tenant_id.reset(tenant_logged)
            logs.request_id.reset(logged_as)
            if scope["type"] == "http":
                self.metrics.observe_request(
                    scope["method"],
                    scope.get("path_template") or UNMATCHED_ROUTE,  # never the raw path
                    status or 500,  # failed before it answered
                    time.perf_counter() - started,
                )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def dependencies(container: Container) -> dict[str, Provide]:
    """What handlers may ask for by name (api/dependencies.py types each), all from the
    container. Services whose methods block are wrapped once in `Threaded`, the API's one
    seam to its worker threads (application/threads.py)."""
    c = container

    def commands(name: str, service: Any) -> Threaded[Any]:
        return Threaded(service, command_observer(c.metrics, name))

    provided = {
        name: _constant(value)
        for name, value in {
            "pipelines": commands("pipelines", c.pipelines),
            "tenants": commands("tenants", c.tenants),
            "users": commands("users", c.users),
            "api_keys": commands("api_keys", c.api_keys),
            "runs": commands("runs", c.runs),
            "deployments": commands("deployments", c.deployments),
            "rollbacks": commands("rollbacks", c.rollbacks),
            "jobs": commands("jobs", c.jobs),
            "sessions": commands("sessions", c.sessions),
            "webhooks": commands("webhooks", c.webhooks),
            "webhook_queries": c.webhook_queries,
            "secrets": commands("secrets", c.secrets),
            "authoring": commands("authoring", c.authoring),
            "step_history": c.step_history,
            "secret_queries": c.secret_queries,
            "connections": commands("connections", c.connections),
            "connection_queries": c.connection_queries,
            "logins": c.logins,
            "read_your_writes": ReadYourWrites(
                c.read_pool, c.positions, c.settings.min_position_timeout
            ),
            "pipeline_queries": c.pipeline_queries,
            "tenant_queries": c.tenant_queries,
            "user_queries": c.user_queries,
            "api_key_queries": c.api_key_queries,
            "run_queries": c.run_queries,
            "deployment_queries": c.deployment_queries,
            "job_queries": c.job_queries,
            "run_logs": c.run_logs,
            "settings": c.settings,
            "plugins": c.plugins,
            "read_pool": c.read_pool,
            "live_events": c.live_events,
            "positions": c.positions,
            # The audit trail (api/controllers/audit.py, README "Audit trail").
            "audit_queries": c.audit_queries,
            # A query on the event store, not a command: not counted with the commands.
            "point_in_time": Threaded(c.point_in_time),
        }.items()
    }
    # Set once the background connect succeeds (the API starts without NATS): read per request.
    provided["nats"] = Provide(lambda: c.nats, sync_to_thread=False)
    provided["paging"] = Provide(provide_paging, sync_to_thread=False)
    provided["audit_query"] = Provide(provide_audit_query, sync_to_thread=False)
    return provided


def create_app(container: Container, roles: set[str] | None = None) -> Litestar:
    """The HTTP API over `container`; `roles` are background roles (relay, projector)
    this process runs too (all of them for `norn serve`)."""
    dependency_resolution.install()
    background = Roles(container, set(roles or ()))
    query_rules = QueryRules()
    mcp = McpEndpoint(container)  # /mcp: the MCP server over streamable HTTP

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Commands run the synchronous event store in threads: give them enough.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="norn-cmd")
        )
        await container.read_pool.open()
        feed = asyncio.create_task(
            connect_feed(container, follow_projector="projector" not in (roles or ()))
        )
        await background.start()
        # Rate limits are decided in memory; this syncs them with the other processes.
        await container.rate_limiter.start()
        await container.stream_slots.start()  # beats the rows of this process's streams
        try:
            yield
        finally:
            await container.stream_slots.stop()  # its streams end with it: rows deleted
            await background.stop()
            await container.rate_limiter.stop()  # sends what is left: before the pool closes
            feed.cancel()
            with contextlib.suppress(BaseException):
                await feed
            if container.nats is not None:
                with contextlib.suppress(Exception):
                    await container.nats.close()
                container.nats = None
            await container.read_pool.close()

    app = NornApp(
        route_handlers=[
            HealthController,
            HealthDetailsController,
            MetricsController,
            AuthController,
            TenantController,
            UserController,
            ApiKeyController,
            PipelineController,
            AuthoringController,
            PipelineRunController,
            RunController,
            RunReportController,
            DeploymentController,
            JobController,
            SchedulerTimelineController,
            PipelineDeployController,
            PluginController,
            EventStreamController,
            WebhookController,
            SecretController,
            ConnectionController,
            ConnectorController,
            EventSocketController,
            AuditController,
            ResourceEventsController,
            BatchController,
            mcp.route,
            ui_router(),  # the dashboard at /ui (api/ui/)
        ],
        dependencies=dependencies(container),
        # Outermost first: rate limits, permissions and idempotency need the principal
        # that authentication found; a refused or replayed request still counts, and a
        # replay needs the route's permission as the first answer did.
        middleware=[
            DefineMiddleware(BearerAuthMiddleware, exclude=PUBLIC_PATHS),
            RateLimitMiddleware(),
            PermissionMiddleware(),
            IdempotencyMiddleware(),
        ],
        before_request=query_rules.before_request,
        after_request=query_rules.after_request,
        exception_handlers=EXCEPTION_HANDLERS,
        # The MCP session manager within the app's: it stops before the pools close.
        lifespan=[lifespan, mcp.lifespan],
        # Logging is configured once by the process (infrastructure/logs.py), not by
        # Litestar's default config, which would replace it with its own format.
        logging_config=None,
        request_max_body_size=container.settings.max_body_bytes,
        template_config=ui_template_config(),
        openapi_config=OpenAPIConfig(
            title="Norn",
            version="1",
            description="Event-sourced control plane for data pipelines.",
            # Public like /health: the app-wide permission check would otherwise refuse
            # these routes, which declare no permission.
            openapi_router=Router(
                path="/schema",
                route_handlers=[docs_assets()],
                opt={"public": True},
                before_request=describe_once,
                include_in_schema=False,
            ),
            # Swagger UI from the swagger-ui-bundle package, not a CDN: the page works
            # offline. Security, error responses and headers: api/openapi.py.
            render_plugins=[
                SwaggerRenderPlugin(
                    js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                    favicon="",  # Litestar's default is an image on a CDN
                )
            ],
        ),
    )
    query_rules.install(app)
    app.state.query_rules = query_rules  # api/errors.py: a 404 that is a bad path parameter
    app.state.container = container
    app.metrics = container.metrics
    return app
