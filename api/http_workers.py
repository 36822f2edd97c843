"""HTTP worker processes of `norn serve` (NORN_HTTP_WORKERS >= 1; docs/architecture.md §1).

One Python process answers HTTP on one core at most (the GIL), and on one event loop
with the background roles the relay and the projector wait behind every request. With
workers, the serve process runs only the background roles and starts HTTP_WORKERS
API-only processes (`norn api` answers itself and starts HTTP_WORKERS more) that accept
connections on its very listening socket (inherited, not bound again: nothing else can
take the port, and a second `norn serve` still finds it busy), each with its own pools,
caches and usage shards (application/quotas.py), on the servers the serve process
started or was given. It restarts one that dies, stops them before it lets go of the
embedded servers, and they stop by themselves if it vanishes (killed with SIGKILL).

Counted metrics are shared through files (infrastructure/metrics.py
`share_between_processes`); a worker answers /metrics with the serve process's, which
sums everyone's (`PRIMARY_METRICS`)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from api.bootstrap import Container, Servers
    from infrastructure.settings import Settings

log = logging.getLogger(__name__)

LISTENER_FD = "NORN_HTTP_WORKER_FD"
"""The inherited listening socket's file descriptor, in a worker's environment."""
PARENT = "NORN_HTTP_WORKER_PARENT"
"""The serve process's pid (a worker that starts after it died must not take init's
pid for its parent's)."""
PRIMARY_METRICS = "NORN_HTTP_WORKER_METRICS_URL"
"""Where the serve process answers /metrics for its workers (127.0.0.1, a port of its
own that only they are told of)."""
RESTART_PAUSE = 1.0
"""Seconds before a worker that died is started again (so a worker that cannot start
does not spin)."""
STOP_TIMEOUT = 10.0
METRICS_PREFIX = "norn-metrics-"
"""The shared metrics directory of a `norn serve`: <tmp>/norn-metrics-<its pid>-<random>."""
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ORPHAN_GRACE = 5.0
"""Seconds a worker whose serve process is gone has to stop gracefully."""


class HttpWorkers:
    """The serve process's workers: started, watched, restarted, stopped."""

    def __init__(
        self,
        count: int,
        listener: socket.socket,
        env: dict[str, str],
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._count = count
        self._on_stop = on_stop
        self._fd = listener.fileno()
        self._env = {**os.environ, **env, LISTENER_FD: str(self._fd), PARENT: str(os.getpid())}
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no worker is started once stopping began
        self._watcher = threading.Thread(target=self._watch, name="http-workers", daemon=True)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def start(self) -> None:
        self._processes = [self._spawn(index) for index in range(self._count)]
        self._watcher.start()
        log.info("%d HTTP worker process(es) started: %s", self._count, self.pids)

    def stop(self) -> None:
        """SIGTERM every worker (each finishes its requests, as uvicorn does), wait, and
        SIGKILL what is left after STOP_TIMEOUT. Once: a second call does nothing."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join()
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self._processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("HTTP worker %d did not stop in time: killed", process.pid)
                process.kill()
                process.wait()
        if self._on_stop is not None:
            self._on_stop()

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        from application.quotas import SHARD_ENV, process_shard, shard_after

        # Each process its own usage shard: the serve process's, then the next ones.
        shard = shard_after(process_shard(), index + 1)
        # A session of its own: a Ctrl-C meant for `norn serve` reaches the serve process
        # only, which stops the workers after its own requests, in order.
        return subprocess.Popen(
            [sys.executable, "-m", "api.http_worker"],
            env={**self._env, SHARD_ENV: str(shard)},
            pass_fds=(self._fd,),
            start_new_session=True,
        )

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for index, process in enumerate(self._processes):
                code = process.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.error("HTTP worker %d exited (%s); starting another", process.pid, code)
                if self._stopping.wait(RESTART_PAUSE):
                    return
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._processes[index] = self._spawn(index)


def watch_parent() -> None:
    """In a worker, first thing: stop once the serve process is gone. SIGTERM itself (a
    graceful stop: uvicorn closes the listening socket first, so a restarted `norn
    serve` finds its port free), then, after ORPHAN_GRACE, exit. On Linux the kernel
    sends the SIGTERM at once (PR_SET_PDEATHSIG); a poll every half second does it
    elsewhere, and when the serve process died before that was set."""
    parent = int(os.environ[PARENT])
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        log.warning("the serve process %d is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        # A worker still starting may wait for what the serve process would have made
        # (its JetStream streams), and uvicorn acts on a signal only once started.
        time.sleep(ORPHAN_GRACE)
        log.error("still running %.0f s after the serve process went: exiting", ORPHAN_GRACE)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def shared_metrics(workers: int) -> str | None:
    """With HTTP workers: the directory the processes share their counted metrics in,
    made before the container's metrics exist (infrastructure/metrics.py)."""
    if workers < 1:
        return None
    from infrastructure.metrics import share_between_processes

    remove_orphaned_metrics()
    directory = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    share_between_processes(directory)
    return directory


def remove_orphaned_metrics(root: Path | None = None) -> None:
    """Remove the metrics directories of `norn serve` processes that no longer run (one
    killed with SIGKILL cleans nothing up); their pid is in the name."""
    for path in Path(root or tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
        pid = path.name[len(METRICS_PREFIX) :].partition("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def start_workers(
    settings: Settings,
    listener: socket.socket,
    servers: Servers,
    container: Container,
    metrics_dir: str,
    count: int,
) -> HttpWorkers:
    """`count` workers on this process's socket and servers, and the private endpoint
    that answers their /metrics with this process's."""
    from api.cli_support import open_listener
    from infrastructure.metrics import SHARED_DIR
    from infrastructure.metrics_server import serve_metrics

    private = open_listener("127.0.0.1", 0)
    metrics_server = serve_metrics(private, container.metrics.exposed, settings.metrics_token)
    container.metrics.serves_workers = True
    port = private.getsockname()[1]
    workers = HttpWorkers(
        count,
        listener,
        {
            "NORN_DATABASE_URL": servers.database_url,
            "NORN_NATS_URL": servers.nats_url,
            "NORN_HTTP_WORKERS": "0",  # a worker starts none of its own
            PRIMARY_METRICS: f"http://127.0.0.1:{port}/metrics",
            SHARED_DIR: metrics_dir,
        },
        on_stop=metrics_server.shutdown,
    )
    workers.start()
    return workers
