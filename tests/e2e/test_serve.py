"""`norn serve` as a user runs it: a real process serving HTTP with every role, that
stops cleanly on SIGINT/SIGTERM and finds everything where it was after a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded import free_port, nats_status
from infrastructure.settings import Settings
from tests.support.processes import norn_env

NORN = str(Path(sys.executable).parent / "norn")


def _start(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = norn_env(
        settings,
        NORN_PORT=str(port),
        NORN_ADMIN_USERNAME=settings.admin_username or "",
        NORN_ADMIN_PASSWORD=settings.admin_password or "",
    )
    process = subprocess.Popen([NORN, "serve"], env=env)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "norn serve exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("norn serve did not become ready")


def _stop(process: subprocess.Popen[bytes], sig: int) -> float:
    started = time.monotonic()
    process.send_signal(sig)
    process.wait(timeout=20)
    return time.monotonic() - started


def test_serve_round_trip_survives_restart(settings: Settings) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start(settings, port)
    try:
        token = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": settings.admin_username, "password": settings.admin_password},
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        tenant = httpx.post(f"{base}/api/v1/tenants", json={"name": "acme"}, headers=admin).json()
        admin_in_acme = {**admin, "X-Tenant-ID": tenant["id"]}
        created = httpx.post(
            f"{base}/api/v1/pipelines",
            json={
                "name": "nightly",
                "steps": [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}],
            },
            headers=admin_in_acme,
        )
        assert created.status_code == 201, created.text
        pipeline = created.json()
        seen = httpx.get(
            f"{base}/api/v1/pipelines/{pipeline['id']}",
            params={"min_position": pipeline["position"]},
            headers=admin_in_acme,
        )
        assert seen.status_code == 200 and seen.json()["name"] == "nightly"
    finally:
        elapsed = _stop(process, signal.SIGINT)
    assert process.returncode in (0, -signal.SIGINT, 130)
    assert elapsed < 15

    process = _start(settings, port)
    try:
        listed = httpx.get(f"{base}/api/v1/pipelines", headers=admin_in_acme)
        assert [p["name"] for p in listed.json()["items"]] == ["nightly"]
        history = httpx.get(
            f"{base}/api/v1/pipelines/{pipeline['id']}/history", headers=admin_in_acme
        )
        assert [h["revision"] for h in history.json()["items"]] == [1]
    finally:
        _stop(process, signal.SIGTERM)
    assert process.returncode in (0, -signal.SIGTERM)


def _processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (the embedded servers do)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and int(proc.name) != os.getpid():
            found.append(cmdline)
    return found


def test_sigterm_with_an_open_feed_stops_everything_on_the_embedded_default(
    server_dir: Path,
) -> None:
    data_dir = server_dir / "norn-data"  # embedded PostgreSQL: outside pytest's tmp root
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORN_")}
    env.update(
        NORN_DATA_DIR=str(data_dir),
        NORN_PORT=str(port),
        NORN_ADMIN_USERNAME="boss",
        NORN_ADMIN_PASSWORD="a-long-enough-password",
        NORN_LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen([NORN, "serve"], env=env)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "norn serve exited during start-up"
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "embedded norn serve did not become ready"
            time.sleep(0.3)
        assert _processes_using(data_dir), "the embedded servers should be running"
        # Operator commands beside the live server use its servers and leave them be.
        nats_before = nats_status(data_dir).pid
        for command in (["projections", "status"], ["migrate"], ["info"]):
            done = subprocess.run(  # noqa: S603
                [NORN, *command], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert "starting" not in done.stderr
        assert nats_status(data_dir).pid == nats_before
        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200
        token = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "boss", "password": "a-long-enough-password"},
        ).json()["access_token"]
        with httpx.stream(
            "GET",
            f"{base}/api/v1/events/stream",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as feed:
            first = next(feed.iter_raw())
            # A comment only: no `data:` line, which EventSource would deliver as a message.
            assert first.replace(b"\r\n", b"\n") == b": connected\n\n"
            elapsed = _stop(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # a clean stop even when the test failed
            process.wait(timeout=30)
    assert elapsed < 15
    assert process.returncode in (0, -signal.SIGTERM)
    time.sleep(0.5)
    assert _processes_using(data_dir) == []


def test_serve_on_a_busy_port_exits_at_once_before_touching_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "norn-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORN_")}
    with socket.socket() as held:  # another program on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        env.update(NORN_DATA_DIR=str(data_dir), NORN_PORT=str(held.getsockname()[1]))
        # The embedded default with no admin named: a start would initdb and print a
        # one-time password. 10 s is the promise; initdb alone takes longer here.
        done = subprocess.run(  # noqa: S603
            [NORN, "serve"], env=env, capture_output=True, text=True, timeout=10
        )
    assert done.returncode == 1
    assert done.stdout == ""  # neither "Norn listening" nor a password
    assert "password" not in done.stderr.lower()
    assert done.stderr.startswith("norn: cannot listen on 127.0.0.1:")
    assert "Traceback" not in done.stderr
    assert not data_dir.exists()  # no initdb, no embedded server, no admin
