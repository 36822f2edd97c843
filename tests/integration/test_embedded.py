"""The embedded servers recover from an owner that was killed outright (SIGKILL): the
next start neither runs a second JetStream server on the same store nor leaves
PostgreSQL running forever."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from infrastructure.embedded import EmbeddedNats, EmbeddedPostgres


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child we never reaped is a zombie: gone for every purpose that matters here.
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]


def test_a_nats_server_left_behind_is_stopped_before_a_new_one_starts(tmp_path: Path) -> None:
    orphan = EmbeddedNats(tmp_path)
    orphan.start()
    process = orphan._process
    assert process is not None
    orphan_pid = process.pid
    orphan._process = None  # its owner "died" without stopping it
    # An orphan's new parent (init) reaps it once it exits. Here it stays this process's
    # child: unreaped, it would linger as a zombie that still answers kill(pid, 0), and
    # the successor would wait its whole 10 s for it to go.
    reaper = threading.Thread(target=process.wait, daemon=True)
    reaper.start()

    successor = EmbeddedNats(tmp_path)
    try:
        successor.start()
        deadline = time.monotonic() + 5
        while _alive(orphan_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(orphan_pid)
        reaper.join(timeout=5)
        assert process.returncode is not None
        assert successor._process is not None and successor._process.poll() is None
    finally:
        successor.stop()


def test_postgres_stops_even_when_a_dead_process_is_still_listed_as_a_user(
    server_dir: Path,
) -> None:
    tmp_path = server_dir  # PostgreSQL's data outside pytest's tmp root (tests/conftest.py)
    first = EmbeddedPostgres(tmp_path)
    first.start()
    first.stop()
    dead = 2**22 + 12345  # above any pid_max: never a running process
    (tmp_path / "postgres" / ".handle_pids.json").write_text(json.dumps([dead]))
    server = EmbeddedPostgres(tmp_path)
    server.start()
    postmaster = int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[0])
    assert _alive(postmaster)

    server.stop()

    deadline = time.monotonic() + 10
    while _alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(postmaster)
