"""`norn mcp` (README "MCP server"): Norn's MCP tools over this process's stdin and
stdout, for an MCP client that starts it (Claude Desktop, an IDE, an agent). It acts as
the API key in NORN_API_KEY, with that key's tenant and roles, against the configured
PostgreSQL; it needs no NATS (a run it triggers is picked up by the executors of
`norn serve` or `norn executor`)."""

from __future__ import annotations

import argparse
import asyncio
import os

from api.cli_commands import announce_for_command
from api.cli_support import CliError
from infrastructure.settings import Settings

API_KEY_VARIABLE = "NORN_API_KEY"


def mcp(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build_container, start_servers
    from api.mcp_server import serve_stdio

    api_key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if not api_key:
        raise CliError(
            f"set {API_KEY_VARIABLE} to an API key of the tenant to act in "
            '(README "API keys"); `norn mcp` acts as that key',
            2,
        )
    servers = start_servers(settings, nats=False, announce=announce_for_command)
    try:
        container = build_container(settings, servers.database_url, servers.nats_url)
        try:
            asyncio.run(serve_stdio(container, api_key))
        finally:
            container.close()
    finally:
        servers.stop()
    return 0
