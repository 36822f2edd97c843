"""The shared metrics directories of `norn serve` with HTTP workers (api/http_workers.py):
those of serve processes that no longer run are removed at the next start, those of
live ones are left alone."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from api.http_workers import METRICS_PREFIX, remove_orphaned_metrics


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
