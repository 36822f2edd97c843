"""`norn serve` killed (SIGKILL) in the middle of an idempotent trigger while 8 clients
trigger runs, each request with its own Idempotency-Key: once after the run was appended
but before its response was kept, once after the response was kept but before it was
sent. The test-only crash point (api/crash_points.py) makes the process die in exactly
that window for one key. After a restart every unanswered request is retried with its
key: each key must have queued exactly one run, the killed one answers what it queued
(202, `Idempotent-Replayed: true`, the body the first attempt would have sent) at once
instead of a "still in progress" 409, and no key ever queues a second run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from api.crash_points import ENV as CRASH_AT
from infrastructure.embedded import free_port
from infrastructure.mapper import decode_state
from infrastructure.settings import Settings
from tests.support.processes import norn_env

NORN = str(Path(sys.executable).parent / "norn")
PROJECT = Path(__file__).resolve().parents[2]
ADMIN = {"username": "root-admin", "password": "correct-horse-staple-42"}
CLIENTS = 8
KILLED_KEY = "the-killed-trigger"


@contextmanager
def serve(
    settings: Settings, port: int, crash_at: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    env = norn_env(
        settings,
        NORN_JWT_SECRET=settings.jwt_secret or "",
        NORN_ADMIN_USERNAME=ADMIN["username"],
        NORN_ADMIN_PASSWORD=ADMIN["password"],
        NORN_RATE_LIMITS=settings.rate_limits,
        NORN_PORT=str(port),
        NORN_DB_POOL_SIZE="8",
        # One process answers: the crash point kills whichever process reaches it, and
        # the test needs that to be `norn serve` itself, not an HTTP worker it restarts.
        NORN_HTTP_WORKERS="0",
    )
    env.pop(CRASH_AT, None)
    if crash_at is not None:
        env[CRASH_AT] = f"{crash_at}:{KILLED_KEY}"
    process = subprocess.Popen([NORN, "serve"], env=env, cwd=PROJECT)  # noqa: S603
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def ready(base: str, process: subprocess.Popen[bytes], attempts: int = 300) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(attempts):
            assert process.poll() is None, "norn serve exited"
            try:
                if (await client.get(f"{base}/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("norn serve did not become ready")


async def editor_and_pipeline(base: str) -> tuple[dict[str, str], str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        token = (await c.post("/api/v1/auth/login", json=ADMIN)).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        tenant = (await c.post("/api/v1/tenants", json={"name": "load"}, headers=admin)).json()
        quotas = {"max_runs_per_day": 1_000_000, "max_concurrent_runs": 1_000_000}
        set_quotas = await c.put(
            f"/api/v1/tenants/{tenant['id']}/quotas", json=quotas, headers=admin
        )
        assert set_quotas.status_code == 200, set_quotas.text
        user = {"username": "loader", "password": "battery-horse-staple-42"}
        made = await c.post(
            "/api/v1/users",
            json={**user, "tenant_id": tenant["id"], "roles": ["editor"]},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        token = (await c.post("/api/v1/auth/login", json=user)).json()["access_token"]
        editor = {"Authorization": f"Bearer {token}"}
        body = {
            "name": "nightly",
            "steps": [{"name": "wait", "plugin": "Input.file", "config": {"path": "x"}}],
        }
        pipeline = await c.post("/api/v1/pipelines", json=body, headers=editor)
        assert pipeline.status_code == 201, pipeline.text
        return editor, pipeline.json()["id"]


async def trigger(
    c: httpx.AsyncClient, editor: dict[str, str], url: str, key: str
) -> httpx.Response:
    return await c.post(
        url, json={"params": {"key": key}}, headers={**editor, "Idempotency-Key": key}
    )


async def trigger_until_killed(
    base: str, editor: dict[str, str], url: str
) -> tuple[dict[str, httpx.Response], list[str]]:
    """Trigger from CLIENTS clients, each request with a new key, until the server dies;
    after the load got going, one more request with the killed key. Return the answered
    requests by key and the keys sent without an answer."""
    answered: dict[str, httpx.Response] = {}
    unanswered: list[str] = []
    started = asyncio.Event()

    async def client(c: httpx.AsyncClient, w: int) -> None:
        for i in range(100_000):
            key = f"w{w}-{i}"
            try:
                response = await trigger(c, editor, url, key)
            except httpx.HTTPError:
                unanswered.append(key)
                return
            assert response.status_code == 202, response.text
            answered[key] = response
            if len(answered) >= 4 * CLIENTS:
                started.set()

    async def killer(c: httpx.AsyncClient) -> None:
        await started.wait()
        with pytest.raises(httpx.HTTPError):
            await trigger(c, editor, url, KILLED_KEY)
        unanswered.append(KILLED_KEY)

    limits = httpx.Limits(max_connections=CLIENTS + 1)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as c:
        await asyncio.gather(killer(c), *(client(c, w) for w in range(CLIENTS)))
    return answered, unanswered


def queued_runs(settings: Settings) -> dict[str, list[tuple[str, int, int]]]:
    """Per Idempotency-Key (the run's params say which): each run queued with it, as
    (run id, its RunQueued position, the last position of that append)."""
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT f.originator_id::text, f.notification_id, f.state,"
            " (SELECT max(e.notification_id) FROM norn_events e WHERE e.tx_id = f.tx_id"
            "   AND e.notification_id >= f.notification_id)"
            " FROM norn_events f WHERE f.topic LIKE '%RunQueued'"
        ).fetchall()
    runs: dict[str, list[tuple[str, int, int]]] = {}
    for run_id, position, state, last in rows:
        key = decode_state(bytes(state))["params"]["key"]
        runs.setdefault(key, []).append((run_id, int(position), int(last)))
    return runs


@pytest.mark.parametrize("crash_at", ["idempotency-after-command", "idempotency-after-record"])
async def test_a_trigger_killed_mid_request_queues_once_and_replays(
    settings: Settings, crash_at: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(settings, port, crash_at) as server:
        await ready(base, server)
        editor, pipeline_id = await editor_and_pipeline(base)
        url = f"/api/v1/pipelines/{pipeline_id}/runs"
        answered, unanswered = await asyncio.wait_for(trigger_until_killed(base, editor, url), 120)
        assert server.wait(timeout=30) == -9  # the crash point, not some other end
    assert KILLED_KEY in unanswered and len(answered) >= 4 * CLIENTS

    killed_run = queued_runs(settings)[KILLED_KEY]
    assert len(killed_run) == 1, "the killed trigger had appended its run"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(settings, port) as restarted:
        await ready(base, restarted)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            # The killed request first: it answers its run at once, not a 409.
            replay = await trigger(c, editor, url, KILLED_KEY)
            retried = {key: await trigger(c, editor, url, key) for key in unanswered}
            again = {key: await trigger(c, editor, url, key) for key in list(answered)[:8]}

    run_id, _, last_position = killed_run[0]
    assert replay.status_code == 202, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == f"/api/v1/runs/{run_id}"
    assert replay.json() == {
        "run_id": run_id,
        "status": "queued",
        "revision": 1,
        "position": last_position,
    }
    assert retried[KILLED_KEY].json() == replay.json()
    for key, response in retried.items():
        assert response.status_code == 202, (key, response.text)
    for key, response in again.items():
        assert response.status_code == 202, (key, response.text)
        assert response.headers["idempotent-replayed"] == "true"
        assert response.json() == answered[key].json()

    runs = queued_runs(settings)
    assert sorted(runs) == sorted({*answered, *unanswered})
    twice = {key: found for key, found in runs.items() if len(found) != 1}
    assert not twice, f"keys that queued more than one run: {twice}"
    for key, response in {**answered, **retried}.items():
        assert response.json()["run_id"] == runs[key][0][0]
