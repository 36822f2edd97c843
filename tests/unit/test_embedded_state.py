"""The record of who runs and who uses an embedded server (infrastructure/embedded_state):
kept whole through garbage and crashes, users counted per handle, dead ones dropped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infrastructure.embedded_state import (
    ServerRecord,
    StateFile,
    is_server_of,
    pid_alive,
    port_free,
)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_missing_or_damaged_file_reads_as_no_server(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    assert state.read() == ServerRecord()
    state.path.write_text("{not json")
    assert state.read() == ServerRecord()
    state.path.write_text(json.dumps({"pid": "12", "port": 4222, "users": [1, "x", 2]}))
    assert state.read() == ServerRecord(pid=None, port=4222, owner=None, users=[1, 2])


def test_changes_made_under_the_lock_are_kept_and_the_port_survives_a_stop(
    tmp_path: Path,
) -> None:
    state = StateFile(tmp_path / "nats")
    with state.locked() as record:
        record.pid, record.port, record.owner = 4321, 41234, os.getpid()
        record.users.append(os.getpid())
    assert state.read() == ServerRecord(4321, 41234, os.getpid(), [os.getpid()])
    with state.locked() as record:
        record.leave(os.getpid())
        record.pid = record.owner = None
    assert state.read() == ServerRecord(port=41234)


def test_a_failure_under_the_lock_writes_nothing(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    with state.locked() as record:
        record.port = 1
    with pytest.raises(RuntimeError), state.locked() as record:
        record.port = 2
        raise RuntimeError("the server did not start")
    assert state.read().port == 1
    with state.locked() as record:  # and the lock was released
        assert record.port == 1


def test_users_are_counted_per_handle_and_dead_ones_dropped(dead_pid: int) -> None:
    me = os.getpid()
    record = ServerRecord(users=[me, dead_pid, me, dead_pid])
    assert record.drop_dead_users() == [dead_pid]
    assert record.users == [me, me]
    record.leave(me)
    assert record.users == [me]  # this process still holds another handle
    record.leave(me)
    record.leave(me)  # leaving twice is harmless
    assert record.users == []


def test_liveness_and_identity_of_a_server_pid(dead_pid: int, tmp_path: Path) -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid)
    assert not pid_alive(None)
    # This process is alive but no nats-server: a reused pid is never taken for one.
    assert not is_server_of(os.getpid(), "nats-server", tmp_path)
    assert not is_server_of(dead_pid, "nats-server", tmp_path)


def test_a_port_is_free_unless_something_listens_on_it() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        held.listen()
        assert not port_free(port)
    assert port_free(port)
