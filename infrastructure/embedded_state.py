"""Who runs and who uses an embedded server of a data dir: a small JSON file beside the
server's data, read and written only under a file lock. Every process sharing a data dir
(`norn serve`, a role, an operator command) registers as a user while it needs the
server; the last user to leave stops it, so no process stops a server another live
process is using. Users that died without leaving (kill -9) are dropped when the file is
next read, so their server is adopted by the next process instead of left behind."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


@dataclass
class ServerRecord:
    pid: int | None = None
    """The server process; None when none runs."""
    port: int | None = None
    """Its port, kept after it stops so the next start uses the same one."""
    owner: int | None = None
    """The process that started it (or adopted it after its starter died)."""
    users: list[int] = field(default_factory=list)
    """Processes using it now, once per handle (a process may hold several)."""

    @classmethod
    def from_json(cls, raw: object) -> ServerRecord:
        if not isinstance(raw, dict):
            return cls()

        def pid(value: object) -> int | None:
            return value if isinstance(value, int) and value > 0 else None

        users = raw.get("users")
        return cls(
            pid=pid(raw.get("pid")),
            port=raw["port"] if isinstance(raw.get("port"), int) else None,
            owner=pid(raw.get("owner")),
            users=[u for u in users if isinstance(u, int)] if isinstance(users, list) else [],
        )

    def drop_dead_users(self) -> list[int]:
        """Forget users that no longer run; return them."""
        dead = sorted({pid for pid in self.users if not pid_alive(pid)})
        self.users = [pid for pid in self.users if pid not in dead]
        return dead

    def leave(self, pid: int) -> None:
        """One handle of `pid` lets go (it may hold others)."""
        with contextlib.suppress(ValueError):
            self.users.remove(pid)


class StateFile:
    """`<dir>/embedded.json`, locked by `<dir>/embedded.lock` (flock: released by the
    kernel when its holder dies, so a killed process never leaves it locked)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "embedded.json"
        self._lock_path = directory / "embedded.lock"

    def read(self) -> ServerRecord:
        """The record as it is, without locking (for reports: may be a moment old)."""
        try:
            return ServerRecord.from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return ServerRecord()

    @contextlib.contextmanager
    def locked(self) -> Iterator[ServerRecord]:
        """The record, exclusively; written back when the block ends without error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                record = self.read()
                yield record
                self._write(record)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, record: ServerRecord) -> None:
        # Replace, never rewrite in place: a reader without the lock sees old or new.
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(asdict(record)))
        os.replace(temporary, self.path)


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_server_of(pid: int | None, binary: str, directory: Path) -> bool:
    """Whether `pid` is a `binary` working on `directory` (and not some other process
    that got the pid of a server that exited)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return (
        bool(cmdline)
        and Path(cmdline[0]).name == binary
        and any(str(directory) in part for part in cmdline[1:])
    )


def servers_of(binary: str, directory: Path) -> list[int]:
    """Every running `binary` working on `directory`, whatever started it."""
    return [
        proc.pid
        for proc in psutil.process_iter(["name"])
        if proc.info["name"] == binary and is_server_of(proc.pid, binary, directory)
    ]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on host:port (a bind would succeed)."""
    with socket.socket() as probe:
        # As servers bind: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
