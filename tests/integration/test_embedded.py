"""The embedded servers are shared by the processes of one data dir: an operator command
run beside a live server uses its PostgreSQL/NATS and leaves them running; servers whose
owner was killed outright (SIGKILL) are adopted, never doubled; NATS keeps its port.

Starting PostgreSQL costs an initdb: the tests share one data dir (a module fixture)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.embedded import (
    NATS_BINARY,
    EmbeddedNats,
    EmbeddedPostgres,
    nats_status,
    postgres_status,
)
from infrastructure.embedded_state import StateFile, pid_alive, port_answers, servers_of

NORN = str(Path(sys.executable).parent / "norn")


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """One data dir for the module (outside pytest's tmp root: see tests/conftest.py
    _server_dir). Whatever a failed test left running there is stopped at the end."""
    path = Path(tempfile.mkdtemp(prefix="norn-test-shared-"))
    try:
        yield path
    finally:
        for pid in servers_of(NATS_BINARY, (path / "nats").resolve()):
            os.kill(pid, signal.SIGTERM)
        status = postgres_status(path)
        if status.running and status.pid:
            os.kill(status.pid, signal.SIGTERM)  # postgres: a fast shutdown
        subprocess.run(["rm", "-rf", str(path)], check=False)  # noqa: S603, S607


def _gone(pid: int | None) -> bool:
    """Whether `pid` has exited, allowing it the moment a stopping server takes to go."""
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORN_")}
    env.update(NORN_DATA_DIR=str(data_dir), NORN_LOG_LEVEL="WARNING")
    return env


def _norn(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [NORN, *args], env=_env(data_dir), capture_output=True, text=True, timeout=120
    )


HOLDER = """
import sys, time
from pathlib import Path
from infrastructure.embedded import EmbeddedNats, EmbeddedPostgres
data_dir = Path(sys.argv[1])
servers = [EmbeddedNats(data_dir)] + ([EmbeddedPostgres(data_dir)] if "pg" in sys.argv else [])
print(" ".join(server.start() for server in servers), flush=True)
if "hold" in sys.argv:
    time.sleep(300)
for server in servers:
    server.stop()
"""


def _holder(data_dir: Path, *flags: str) -> subprocess.Popen[str]:
    """Another process using the data dir's embedded servers; prints their URLs."""
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", HOLDER, str(data_dir), *flags],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def test_a_one_shot_command_says_what_it_starts_and_stops_it_again(shared_dir: Path) -> None:
    migrated = _norn(shared_dir, "migrate")

    assert migrated.returncode == 0, migrated.stderr
    assert "an embedded PostgreSQL in" in migrated.stderr
    assert "(none is running); it stops when this command ends" in migrated.stderr
    assert not postgres_status(shared_dir).running  # it was the only user
    assert not (shared_dir / "nats").exists()  # migrate needs no NATS


def test_a_command_beside_a_live_server_uses_it_and_leaves_it_running(shared_dir: Path) -> None:
    live = EmbeddedPostgres(shared_dir)
    url = live.start()
    try:
        postmaster = postgres_status(shared_dir).pid
        status = _norn(shared_dir, "projections", "status")
        assert status.returncode == 0, status.stderr
        assert "pipelines" in status.stdout
        assert "starting" not in status.stderr  # it used the running one
        assert pid_alive(postmaster)
        assert postgres_status(shared_dir).users == [os.getpid()]

        info = _norn(shared_dir, "info")
        assert info.returncode == 0, info.stderr
        assert f"PostgreSQL: {url.replace('postgres:@', 'postgres@')}" in info.stdout
        assert f"running (pid {postmaster}; used by pids {os.getpid()};" in info.stdout
        assert "NATS: embedded, not running" in info.stdout
    finally:
        live.stop()
    assert _gone(postmaster)


def test_nats_is_shared_between_processes_and_keeps_its_port(shared_dir: Path) -> None:
    first = EmbeddedNats(shared_dir)
    url = first.start()
    try:
        server = StateFile(first.store_dir).read().pid
        other = _holder(shared_dir)
        out, _ = other.communicate(timeout=60)
        assert other.returncode == 0
        assert out.strip() == url  # the same server...
        assert pid_alive(server) and port_answers(first.port or 0)  # ...left running
        assert servers_of(NATS_BINARY, first.store_dir) == [server]
    finally:
        first.stop()
    assert _gone(server)

    again = EmbeddedNats(shared_dir)
    try:
        assert again.start() == url  # the port kept in the data dir
    finally:
        again.stop()


def test_a_kept_port_taken_by_another_program_moves_and_says_so(
    shared_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    kept = EmbeddedNats(shared_dir)
    kept.start()
    kept.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", kept.port or 0))
        squatter.listen()
        moved = EmbeddedNats(shared_dir)
        try:
            url = moved.start()
            assert moved.port != kept.port and url.endswith(f":{moved.port}")
            assert "is taken by another program" in caplog.text
        finally:
            moved.stop()
    assert StateFile(moved.store_dir).read().port == moved.port  # kept from now on


def test_servers_of_a_killed_owner_are_adopted_not_doubled(shared_dir: Path) -> None:
    owner = _holder(shared_dir, "pg", "hold")
    try:
        assert owner.stdout is not None
        nats_url, pg_url = owner.stdout.readline().split()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    orphan_nats = nats_status(shared_dir).pid
    orphan_pg = postgres_status(shared_dir).pid
    assert pid_alive(orphan_nats) and pid_alive(orphan_pg)  # left running by the dead owner

    nats_server, postgres = EmbeddedNats(shared_dir), EmbeddedPostgres(shared_dir)
    try:
        assert nats_server.start() == nats_url
        assert postgres.start() == pg_url
        state = StateFile(nats_server.store_dir).read()
        assert state.pid == orphan_nats and state.owner == os.getpid()  # adopted
        assert state.users == [os.getpid()]
        assert servers_of(NATS_BINARY, nats_server.store_dir) == [orphan_nats]
        handles = json.loads((postgres.pgdata / ".handle_pids.json").read_text())
        assert handles == [os.getpid()]
        assert postgres_status(shared_dir).pid == orphan_pg
    finally:
        postgres.stop()
        nats_server.stop()
    # The last user lets go: nothing is left behind for good.
    assert _gone(orphan_nats)
    assert _gone(orphan_pg)


def test_a_process_that_lets_go_and_starts_again_is_counted_again(shared_dir: Path) -> None:
    other = _holder(shared_dir, "pg", "hold")
    try:
        assert other.stdout is not None and other.stdout.readline()
        first = EmbeddedPostgres(shared_dir)
        first.start()
        first.stop()  # the other process still uses it: it keeps running
        assert postgres_status(shared_dir).users == [other.pid]
        again = EmbeddedPostgres(shared_dir)
        again.start()
        try:
            assert sorted(postgres_status(shared_dir).users) == sorted([other.pid, os.getpid()])
        finally:
            again.stop()
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
        # Adopt what the killed holder left, and stop it as its last user.
        leftovers = [EmbeddedNats(shared_dir), EmbeddedPostgres(shared_dir)]
        for server in leftovers:
            server.start()
        for server in leftovers:
            server.stop()
    assert not postgres_status(shared_dir).running
