"""PostgreSQL going away and coming back, seen through a TCP proxy the test cuts
(infrastructure/database_availability.py): requests are refused quickly with 503 while
it is away, dead pooled connections are never handed out, and commands work again
soon after it returns. The bounds are generous against a loaded machine; the point is
the difference from before (30 s per request during an outage, 17 s to recover)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infrastructure.settings import Settings
from tests.integration.api_client import login, running_app, unique
from tests.support.log_lines import json_log_lines
from tests.support.tcp_proxy import TcpProxy, tcp_proxy


def _through(proxy: TcpProxy, database_url: str) -> str:
    info = conninfo_to_dict(database_url)
    return make_conninfo(**{**info, "host": "127.0.0.1", "port": str(proxy.port)})


def _target(database_url: str) -> tuple[str, int] | str:
    """Where PostgreSQL listens: host and port, or its Unix socket (a socket directory
    as host, as the embedded server of a run without servers has)."""
    info = conninfo_to_dict(database_url)
    host, port = str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


async def _create_tenant(client: Any, admin: dict[str, str]) -> Any:
    return await client.post("/api/v1/tenants", json={"name": unique("outage")}, headers=admin)


async def test_an_outage_is_refused_fast_and_commands_work_again_soon_after(
    settings: Settings,
) -> None:
    assert settings.database_url
    with tcp_proxy(_target(settings.database_url)) as proxy:
        proxied = dataclasses.replace(settings, database_url=_through(proxy, settings.database_url))
        async with running_app(proxied, roles=frozenset()) as client:
            admin = await login(client, "root-admin", "correct-horse-staple-42")
            assert (await _create_tenant(client, admin)).status_code == 201

            proxy.cut()
            for _ in range(3):
                started = time.monotonic()
                with json_log_lines() as lines:
                    refused = await _create_tenant(client, admin)
                took = time.monotonic() - started
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
                assert refused.headers["retry-after"] == "1"
                assert took < 3.0, f"503 after {took:.2f} s"
                # The request's log lines name it, as its response does.
                told = [line for line in lines if "dependency unavailable" in line["message"]]
                assert told, lines
                assert all(
                    line.get("request_id") == refused.headers["x-request-id"] for line in told
                )
            # A read and the authentication of any request are refused as fast.
            assert (await client.get("/api/v1/tenants", headers=admin)).status_code == 503

            proxy.restore()
            back = time.monotonic()
            while (created := await _create_tenant(client, admin)).status_code == 503:
                assert time.monotonic() - back < 10.0, "commands still refused"
                await asyncio.sleep(0.05)
            assert created.status_code == 201, created.text
            recovered = time.monotonic() - back
            assert recovered < 4.0, f"commands refused for {recovered:.2f} s after the return"


async def test_connections_that_died_in_a_restart_are_not_handed_out(settings: Settings) -> None:
    """The server restarted between two requests: every pooled connection is dead, but
    the server answers. The next request must not see the dead ones."""
    assert settings.database_url
    with tcp_proxy(_target(settings.database_url)) as proxy:
        proxied = dataclasses.replace(settings, database_url=_through(proxy, settings.database_url))
        async with running_app(proxied, roles=frozenset()) as client:
            admin = await login(client, "root-admin", "correct-horse-staple-42")
            assert (await _create_tenant(client, admin)).status_code == 201
            assert (await client.get("/api/v1/tenants", headers=admin)).status_code == 200

            proxy.restart()
            created = await _create_tenant(client, admin)
            assert created.status_code == 201, created.text
            listed = await client.get("/api/v1/tenants", headers=admin)
            assert listed.status_code == 200, listed.text
