"""Norn as an MCP server (README "MCP server"), built with the official `mcp` SDK: the
same tools over stdio (`norn mcp`, api/cli_mcp.py) and over streamable HTTP at /mcp of
the API (api/app.py). Every tool call runs as one principal, authorised with the
permission of the REST route the tool stands for, then calls what that route calls
(api/mcp_tools.py); a refusal is an `isError` result with REST's error
(api/mcp_errors.py).

Who calls: over HTTP, the principal the API's authentication found for the request
(api/auth.py: an API key as `Authorization: Bearer nrn_...` or `X-API-Key`, or a user's
access token, with `X-Tenant-ID` for a platform admin), every MCP request counted
against its rate limit like any REST request; over stdio, the API key in NORN_API_KEY,
authenticated again at each tool call (a revoked key stops at the next one), each tool
call taking a token from the key's bucket. The HTTP side is stateless, JSON answers: an
MCP request needs no session kept in one process, so any API process answers it."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import msgspec
from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from api.mcp_errors import InvalidArgument, tool_error
from api.mcp_tool_list import PERMISSIONS, register
from api.mcp_tools import NornTools, as_json
from api.rate_limit import refusal, take_token
from application.authorization import authorize
from application.errors import AuthenticationFailed
from application.principal import Principal
from domain.events import CommandContext
from infrastructure import logs

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
Work = Callable[[Principal, CommandContext], Awaitable[Any]]


class Caller:
    """Who calls a tool, and the id its log lines and errors carry."""

    async def __call__(self, ctx: Context) -> tuple[Principal, str]:
        raise NotImplementedError


class HttpCaller(Caller):
    """The principal the API's authentication middleware found for this HTTP request
    (it refuses a request without credentials with 401 before the SDK sees it); the
    rate-limit middleware has taken its token already."""

    async def __call__(self, ctx: Context) -> tuple[Principal, str]:
        scope = getattr(ctx.request_context.request, "scope", None) or {}
        principal = scope.get("user")
        if not isinstance(principal, Principal):  # pragma: no cover - the middleware's job
            raise AuthenticationFailed("authentication required")
        request_id = scope.get("state", {}).get("request_id") or uuid4().hex
        return principal, request_id


class ApiKeyCaller(Caller):
    """The API key a `norn mcp` process was started with, authenticated at each call as
    the API does (application/authentication.py), its use noted, a token taken."""

    def __init__(self, container: Any, api_key: str) -> None:
        self._c = container
        self._key = api_key

    async def principal(self) -> Principal:
        principal: Principal = await self._c.authentication.principal_for_api_key_async(self._key)
        await self._c.api_key_usage.touch(UUID(principal.subject_id))
        return principal

    async def __call__(self, ctx: Context) -> tuple[Principal, str]:
        principal = await self.principal()
        decision = await take_token(self._c, principal)
        if not decision.allowed:
            raise refusal(decision, principal)
        return principal, uuid4().hex


class ToolRunner:
    """One tool call: the caller, its permission, the work; its answer or its error."""

    def __init__(self, tools: NornTools, caller: Caller) -> None:
        self.tools = tools
        self._caller = caller

    async def __call__(self, ctx: Context, tool: str, work: Work) -> CallToolResult:
        request_id = uuid4().hex
        logged_as = logs.request_id.set(request_id)
        tenant_logged = logs.tenant_id.set(None)
        try:
            principal, request_id = await self._caller(ctx)
            logs.request_id.set(request_id)
            logs.tenant_id.set(principal.tenant_id)
            authorize(principal, PERMISSIONS[tool])
            command = CommandContext(
                actor=principal.actor, correlation_id=request_id, causation_id=request_id
            )
            answer = as_json(await work(principal, command))
        except Exception as error:
            return _refusal(tool_error(error, request_id))
        finally:
            logs.tenant_id.reset(tenant_logged)
            logs.request_id.reset(logged_as)
        content = [TextContent(type="text", text=_text(answer))]
        return CallToolResult(content=content, structured_content=answer)


def _text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class NornMCPServer(MCPServer):
    """The SDK's server, with arguments its schema check refuses (a string for `limit`)
    answered in REST's error shape, naming the argument, like every other refusal
    (ToolRunner), instead of the SDK's text of a pydantic error; and an argument the
    tool does not take refused, as REST refuses an undeclared query parameter (the SDK
    ignores it)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> Any:
        tool = self._tool_manager.get_tool(name)  # None: the SDK refuses the name
        known = (tool.parameters.get("properties") or {}) if tool is not None else arguments
        if unknown := sorted(set(arguments) - set(known)):  # as REST refuses such a parameter
            message = f"unknown argument(s): {', '.join(unknown)}"
            return _refusal(tool_error(InvalidArgument(unknown[0], message), uuid4().hex))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            refused = error.__cause__
            if isinstance(error, UnexpectedToolError) or not isinstance(refused, ValidationError):
                raise
            first = refused.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "arguments"
            return _refusal(
                tool_error(InvalidArgument(field, f"{field}: {first['msg']}"), uuid4().hex)
            )


def _refusal(body: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=_text(body))],
        structured_content=body,
        is_error=True,
    )


def build_server(container: Any, caller: Caller) -> MCPServer:
    server: MCPServer = NornMCPServer(
        "norn",
        title="Norn",
        instructions=(
            "Norn runs data pipelines. Read pipelines, validate and draft definitions, "
            "trigger runs and follow them (status, logs), list deployments and scheduled "
            "jobs. Every tool acts as one API key or user, within its tenant and roles."
        ),
        # The process configured logging already (infrastructure/logs.py): the SDK's
        # basicConfig changes nothing then.
        log_level="WARNING",
    )
    register(server, ToolRunner(NornTools(container), caller))
    return server


class McpEndpoint:
    """/mcp of the API: the SDK's streamable HTTP transport as an ASGI route of the app,
    authenticated and rate-limited by the app's middleware like any route, and its
    session manager running within the app's lifespan."""

    def __init__(self, container: Any) -> None:
        self.server = build_server(container, HttpCaller())
        self._manager = StreamableHTTPSessionManager(
            app=self.server._lowlevel_server,  # the SDK's own way: MCPServer.streamable_http_app
            json_response=True,
            stateless=True,
            max_request_body_size=container.settings.max_body_bytes,
        )
        manager = self._manager

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            await manager.handle_request(scope, receive, send)  # type: ignore[arg-type]

        self.route: ASGIRouteHandler = asgi(
            MCP_PATH,
            copy_scope=True,  # the SDK's changes stay in its copy (the principal is shared)
            opt={
                # Any authenticated caller: each tool checks its own permission.
                "permission": "authenticated",
                "idempotency": "refuse",
                "idempotency_reason": "MCP messages are not replayed",
            },
        )(serve)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        async with self._manager.run():
            yield


async def serve_stdio(container: Any, api_key: str) -> None:
    """`norn mcp`: the tools over this process's stdin and stdout until stdin closes."""
    caller = ApiKeyCaller(container, api_key)
    await container.read_pool.open()
    try:
        # A key that does not authenticate ends the start here, with the API's reason.
        principal = await caller.principal()
        log.info("MCP over stdio as %s in tenant %s", principal.actor, principal.tenant_id)
        await container.rate_limiter.start()
        try:
            await build_server(container, caller).run_stdio_async()
        finally:
            await container.rate_limiter.stop()
    finally:
        await container.read_pool.close()
