"""`norn serve` with HTTP workers (NORN_HTTP_WORKERS=3; api/http_workers.py): three worker
processes answer on the serve process's port (it runs the background roles only), one
tenant's creates spread over them count exactly, /metrics sums every process's requests
whichever process answers the scrape, a killed worker is replaced, and SIGINT stops them
all and leaves nothing."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from infrastructure.embedded import free_port
from infrastructure.settings import Settings
from tests.support.processes import norn_env

NORN = str(Path(sys.executable).parent / "norn")
WORKERS = 3
CREATES = 60


def start(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = norn_env(
        settings,
        NORN_PORT=str(port),
        NORN_HTTP_WORKERS=str(WORKERS),
        NORN_ADMIN_USERNAME=settings.admin_username or "",
        NORN_ADMIN_PASSWORD=settings.admin_password or "",
    )
    process = subprocess.Popen([NORN, "serve"], env=env)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "norn serve exited during start-up"
        if len(workers_of(process)) == WORKERS:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return process
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("norn serve and its workers did not become ready")


def workers_of(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(process.pid).children():
        try:
            if "api.http_worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue  # gone, or a zombie the serve process has not reaped yet
    return found


def requests_counted(base: str, route: str) -> float:
    body = httpx.get(f"{base}/metrics").text
    series = f'norn_http_requests_total{{method="GET",route="{route}",status="200"}}'
    pattern = rf"^{re.escape(series)} (\S+)$"
    found = re.search(pattern, body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def create_many(base: str, headers: dict[str, str]) -> list[int]:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        limit = asyncio.Semaphore(12)

        async def create(i: int) -> int:
            async with limit:  # fresh connections, so the kernel spreads them
                answer = await client.post(
                    "/api/v1/pipelines",
                    json={
                        "name": f"p{i}",
                        "steps": [{"name": "r", "plugin": "Input.file", "config": {"path": "x"}}],
                    },
                    headers={"Connection": "close"},
                )
                return answer.status_code

        return list(await asyncio.gather(*(create(i) for i in range(CREATES))))


def test_workers_share_the_port_the_counts_and_the_metrics(settings: Settings) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start(settings, port)
    try:
        pids = {w.pid for w in workers_of(process)}
        cpu_before = {w.pid: sum(w.cpu_times()[:2]) for w in workers_of(process)}
        token = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": settings.admin_username, "password": settings.admin_password},
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        tenant = httpx.post(
            f"{base}/api/v1/tenants", json={"name": "acme", "plan": "enterprise"}, headers=admin
        ).json()
        in_acme = {**admin, "X-Tenant-ID": tenant["id"]}

        statuses = asyncio.run(create_many(base, in_acme))
        assert statuses == [201] * CREATES
        # Every worker took part: each spent CPU on requests.
        after = {w.pid: sum(w.cpu_times()[:2]) for w in workers_of(process)}
        assert all(after[pid] > cpu_before[pid] for pid in pids), (cpu_before, after)
        usage = httpx.get(f"{base}/api/v1/tenants/{tenant['id']}/usage", headers=admin).json()
        assert usage["quotas"]["max_pipelines"]["used"] == CREATES

        for _ in range(20):
            with httpx.Client() as fresh:  # a new connection each: any process answers
                assert fresh.get(f"{base}/health/live").status_code == 200
        counts = {requests_counted(base, "/health/live") for _ in range(6)}
        assert min(counts) >= 20  # summed over the processes, whoever answered
        # A live feed open in a worker counts, whichever process answers the scrape.
        with httpx.stream(
            "GET", f"{base}/api/v1/events/stream", headers=in_acme, timeout=10
        ) as feed:
            assert feed.status_code == 200
            scrapes = [httpx.get(f"{base}/metrics").text for _ in range(4)]
            assert all(
                re.search(r"^norn_open_streams 1\.0$", text, re.MULTILINE) for text in scrapes
            ), scrapes[0]

        victim = next(iter(pids))
        psutil.Process(victim).kill()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = {w.pid for w in workers_of(process)}
            if len(now) == WORKERS and victim not in now:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the killed worker was not replaced")
        assert httpx.get(f"{base}/health/live").status_code == 200
        survivors = workers_of(process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode in (0, -signal.SIGINT, 130)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in survivors)


def test_workers_stop_and_free_the_port_when_serve_is_killed(settings: Settings) -> None:
    port = free_port()
    process = start(settings, port)
    workers = workers_of(process)
    process.kill()  # SIGKILL: norn serve cleans up nothing
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        assert time.monotonic() < deadline, "a worker outlived norn serve"
        time.sleep(0.1)
    with socket.socket() as probe:  # nothing holds the port: a restart can take it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
