"""A process that serves no HTTP (`norn relay`) serves its metrics on NORN_METRICS_PORT,
behind NORN_METRICS_TOKEN, and logs JSON lines with NORN_LOG_FORMAT=json."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded import free_port
from infrastructure.settings import Settings
from tests.support.processes import norn_env

NORN = str(Path(sys.executable).parent / "norn")
TOKEN = "scrape-secret-0123456789"


def test_relay_serves_metrics_on_its_port_and_logs_json(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = norn_env(
        settings,
        NORN_METRICS_PORT=str(port),
        NORN_METRICS_TOKEN=TOKEN,
        NORN_LOG_FORMAT="json",
        NORN_LOG_LEVEL=None,
    )
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen([NORN, "relay"], env=env, stderr=err)  # noqa: S603
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "norn relay exited"
            try:
                scraped = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2)
                if "norn_relay_published_position" in scraped.text:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("no relay metrics on the metrics port")
            time.sleep(0.2)
        assert scraped.status_code == 200
        assert "norn_db_pool_connections" in scraped.text
        refused = httpx.get(url, timeout=2)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert lines, "the relay logged nothing"
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(record)
    assert TOKEN not in stderr.read_text()
