"""What the benchmarks share: a `norn serve` process on a fresh database (on the servers
named by NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL, else embedded ones in a temporary
directory), a tenant with an editor, and percentiles. Everything is removed afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infrastructure.embedded import EmbeddedNats, EmbeddedPostgres, free_port

ADMIN, PASSWORD = "bench-admin", "correct-horse-staple-42"
UNLIMITED = ",".join(
    f"{plan}=100000000/1000000" for plan in ("free", "pro", "enterprise", "platform")
)


@dataclass(frozen=True)
class Server:
    base: str
    database_url: str
    data_dir: Path


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextmanager
def norn_server(extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """`norn serve` with every role, its own database, stream and data dir. The request
    rate limits are lifted: the benchmarks measure the work, not the plans."""
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-"))
    embedded: list[EmbeddedPostgres | EmbeddedNats] = []
    admin_url = os.environ.get("NORN_BENCH_DATABASE_URL")
    nats_url = os.environ.get("NORN_BENCH_NATS_URL")
    dbname = f"norn_bench_{uuid.uuid4().hex[:8]}"
    server = None
    try:
        if not admin_url:
            pg = EmbeddedPostgres(tmp)
            embedded.append(pg)
            admin_url = pg.start()
        if not nats_url:
            nats_server = EmbeddedNats(tmp)
            embedded.append(nats_server)
            nats_url = nats_server.start()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        database_url = make_conninfo(admin_url, dbname=dbname)
        port = free_port()
        token = uuid.uuid4().hex[:8]
        env = {
            **os.environ,
            "NORN_DATABASE_URL": database_url,
            "NORN_NATS_URL": nats_url,
            "NORN_PORT": str(port),
            "NORN_DATA_DIR": str(tmp / "data"),
            "NORN_ADMIN_USERNAME": ADMIN,
            "NORN_ADMIN_PASSWORD": PASSWORD,
            "NORN_NATS_STREAM": f"BENCH_{token.upper()}",
            "NORN_SUBJECT_PREFIX": f"bench{token}",
            "NORN_LOG_LEVEL": "WARNING",
            "NORN_RATE_LIMITS": UNLIMITED,
            **(extra_env or {}),
        }
        norn = str(Path(sys.executable).parent / "norn")
        server = subprocess.Popen([norn, "serve"], env=env)  # noqa: S603
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_ready(base))
        yield Server(base=base, database_url=database_url, data_dir=tmp / "data")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if admin_url:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        for e in reversed(embedded):
            e.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _wait_ready(base: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{base}/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def editor_of_new_tenant(base: str, quotas: dict[str, int]) -> tuple[str, dict[str, str]]:
    """An enterprise tenant with `quotas` overridden, and its editor's headers."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        tenant = (
            await c.post(
                "/api/v1/tenants", json={"name": "bench", "plan": "enterprise"}, headers=admin
            )
        ).json()
        await c.put(f"/api/v1/tenants/{tenant['id']}/quotas", json=quotas, headers=admin)
        user = {
            "username": "bench-editor",
            "password": "battery-horse-staple-42",
            "tenant_id": tenant["id"],
            "roles": ["editor"],
        }
        await c.post("/api/v1/users", json=user, headers=admin)
        r = await c.post(
            "/api/v1/auth/login", json={"username": user["username"], "password": user["password"]}
        )
        return tenant["id"], {"Authorization": f"Bearer {r.json()['access_token']}"}
