"""`norn serve`'s HTTP workers (api/http_workers.py): the shared metrics directories of
serve processes that no longer run are removed at the next start, those of live ones are
left alone; each worker is given a usage shard of its own."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from api.http_workers import METRICS_PREFIX, HttpWorkers, remove_orphaned_metrics
from application.quotas import SHARD_ENV, SHARDS, process_shard


def test_only_the_metrics_directories_of_dead_serve_processes_are_removed(
    tmp_path: Path,
) -> None:
    dead = max(psutil.pids()) + 100_000  # no process has it
    orphan = tmp_path / f"{METRICS_PREFIX}{dead}-abc"
    live = tmp_path / f"{METRICS_PREFIX}{os.getpid()}-def"
    unrelated = tmp_path / "norn-metrics-notapid-x"
    for path in (orphan, live, unrelated):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")

    remove_orphaned_metrics(tmp_path)

    assert not orphan.exists()
    assert live.exists() and unrelated.exists()


def test_each_worker_takes_its_own_usage_shard_after_the_serve_processs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SHARD_ENV, raising=False)
    started: list[dict[str, str]] = []

    def popen(*_args: Any, env: dict[str, str], **_options: Any) -> None:
        started.append(env)

    monkeypatch.setattr(subprocess, "Popen", popen)
    with socket.socket() as listener:
        workers = HttpWorkers(3, listener, {})
        for index in (0, 1, 2, 1):  # the last: worker 1 started again after it died
            workers._spawn(index)
    own = process_shard()
    shards = [int(env[SHARD_ENV]) for env in started]
    assert shards == [(own + 1) % SHARDS, (own + 2) % SHARDS, (own + 3) % SHARDS, shards[1]]
