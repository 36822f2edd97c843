"""`norn serve` and its HTTP workers killed (SIGKILL) while 16 clients create pipelines
as fast as they can: some commands are appended and never answered, some die mid-append.
After a restart, the event stream on NATS must hold exactly the committed events of the
store — in position order, none missing, none twice — every answered command must be
there, and every pipeline must have been stored with its name claim in one append."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nats
import psutil
import psycopg

from infrastructure.embedded import free_port
from infrastructure.nats import POSITION_HEADER
from infrastructure.settings import Settings
from tests.support.processes import norn_env

NORN = str(Path(sys.executable).parent / "norn")
PROJECT = Path(__file__).resolve().parents[2]
ADMIN = {"username": "root-admin", "password": "correct-horse-staple-42"}
CLIENTS = 16


@contextmanager
def serve(settings: Settings, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = norn_env(
        settings,
        NORN_JWT_SECRET=settings.jwt_secret or "",
        NORN_ADMIN_USERNAME=ADMIN["username"],
        NORN_ADMIN_PASSWORD=ADMIN["password"],
        NORN_RATE_LIMITS=settings.rate_limits,
        NORN_PORT=str(port),
        NORN_DB_POOL_SIZE="8",
    )
    process = subprocess.Popen([NORN, "serve"], env=env, cwd=PROJECT)  # noqa: S603
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def ready(base: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{base}/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("norn serve did not become ready")


async def editor(base: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        token = (await c.post("/api/v1/auth/login", json=ADMIN)).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        tenant = (await c.post("/api/v1/tenants", json={"name": "load"}, headers=admin)).json()
        quotas = {"max_pipelines": 1_000_000}
        await c.put(f"/api/v1/tenants/{tenant['id']}/quotas", json=quotas, headers=admin)
        user = {"username": "loader", "password": "battery-horse-staple-42"}
        made = await c.post(
            "/api/v1/users",
            json={**user, "tenant_id": tenant["id"], "roles": ["editor"]},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        token = (await c.post("/api/v1/auth/login", json=user)).json()["access_token"]
        return {"Authorization": f"Bearer {token}"}


async def create_until_killed(base: str, headers: dict[str, str]) -> dict[str, int]:
    """Create pipelines from CLIENTS clients until the server goes away; return the
    answered ones (id -> position)."""
    answered: dict[str, int] = {}

    async def client(c: httpx.AsyncClient, w: int) -> None:
        for i in range(100_000):
            body = {
                "name": f"p-{w}-{i}",
                "steps": [{"name": "read", "plugin": "Input.file", "config": {"path": "x"}}],
            }
            try:
                r = await c.post("/api/v1/pipelines", json=body, headers=headers)
            except httpx.HTTPError:
                return  # killed
            assert r.status_code == 201, r.text
            answered[r.json()["id"]] = r.json()["position"]

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as c:
        await asyncio.gather(*(client(c, w) for w in range(CLIENTS)))
    return answered


async def stream_positions(settings: Settings) -> list[int]:
    nc = await nats.connect(settings.nats_url or "")
    try:
        js = nc.jetstream()
        info = await js.stream_info(settings.nats_stream)
        positions = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(settings.nats_stream, seq=seq)
            positions.append(int((msg.headers or {})[POSITION_HEADER]))
        return positions
    finally:
        await nc.close()


def stored(settings: Settings) -> list[tuple[int, str, str, int]]:
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id::text, topic, tx_id::text::bigint"
            " FROM norn_events ORDER BY notification_id"
        ).fetchall()
    return [(int(r[0]), r[1], r[2], int(r[3])) for r in rows]


def http_workers(pid: int) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(pid).children()
        if "api.http_worker" in " ".join(child.cmdline())
    ]


async def test_api_killed_under_load_loses_and_repeats_nothing(settings: Settings) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(settings, port) as server:
        await ready(base)
        headers = await editor(base)
        load = asyncio.create_task(create_until_killed(base, headers))
        await asyncio.sleep(2.0)
        # Every process of it at once: the HTTP workers answer, the serve process runs
        # the relay (a worker left alone would stop gracefully, finishing its requests).
        for process in [*http_workers(server.pid), psutil.Process(server.pid)]:
            process.send_signal(signal.SIGKILL)
        answered = await asyncio.wait_for(load, 60)
    assert len(answered) > 20, "the load did not get going before the kill"

    with serve(settings, free_port()) as _restarted:
        events = stored(settings)
        deadline = time.monotonic() + 60
        while True:
            positions = await stream_positions(settings)
            if (positions and positions[-1] == events[-1][0]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)

    committed = [position for position, *_ in events]
    assert positions == committed  # in order, none missing, none twice
    # Every pipeline was appended together with its name claim (one transaction), and
    # an answered create's position is its append's last one.
    transactions: dict[int, list[tuple[int, str]]] = {}
    tx_of: dict[str, int] = {}
    for position, originator, topic, tx_id in events:
        transactions.setdefault(tx_id, []).append((position, topic.rsplit(":", 1)[-1]))
        tx_of.setdefault(originator, tx_id)
    for appended in transactions.values():
        topics = [topic for _, topic in appended]
        if "PipelineCreated" in topics:
            assert "NameClaimTaken" in topics, topics
    for pipeline_id, position in answered.items():
        assert pipeline_id in tx_of  # every answered create is stored
        assert position == max(p for p, _ in transactions[tx_of[pipeline_id]])
