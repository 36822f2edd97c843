"""`norn executor` processes for tests that kill them: started against the test's
PostgreSQL and NATS with its plugins and heartbeats, and a run awaited on one of them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infrastructure.settings import Settings
from tests.integration.run_helpers import get_run, poll, steps_of
from tests.support.processes import NORN, norn_env

PROJECT = Path(__file__).resolve().parents[2]


@contextmanager
def executor_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """`norn executor` against the test's Postgres and NATS, with its plugins and
    heartbeat settings; killed on exit if still alive."""
    env = norn_env(
        settings,
        PYTHONPATH=str(PROJECT),  # the test plugins are importable as tests.support
        NORN_JWT_SECRET=settings.jwt_secret or "",
        NORN_PLUGINS=settings.plugins,
        NORN_HEARTBEAT_INTERVAL=str(settings.heartbeat_interval),
        NORN_HEARTBEAT_TIMEOUT=str(settings.heartbeat_timeout),
        NORN_RUN_MAX_ATTEMPTS=str(settings.run_max_attempts),
        NORN_DB_POOL_SIZE="4",
    )
    process = subprocess.Popen([NORN, "executor"], env=env, cwd=PROJECT)  # noqa: S603
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def running_on(
    client: Any, editor: dict[str, str], run_id: str, process: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """The run once its slow step runs on `process`. An earlier attempt's "running" can
    still be in the read model for a moment after another executor took the run over:
    taking that for this one failed a test now and then."""

    async def on_process() -> dict[str, Any] | None:
        run = await get_run(client, editor, run_id)
        if run["status"] != "running" or f":{process.pid}:" not in (run["executor_id"] or ""):
            return None
        return run if steps_of(run)["nap"]["status"] == "running" else None

    return await poll(on_process, f"run {run_id} to run its slow step on pid {process.pid}")
