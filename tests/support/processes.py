"""The environment of a `norn` process a test starts (tests/e2e): the test's own database,
NATS stream and data dir, so that processes started by tests never meet another test's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from infrastructure.settings import Settings

NORN = str(Path(sys.executable).parent / "norn")


def norn_env(settings: Settings, **overrides: str | None) -> dict[str, str]:
    """os.environ plus the settings' servers, stream, prefix and data dir,
    NORN_LOG_LEVEL=WARNING, NORN_DB_POOL_SIZE=4 and NORN_HTTP_WORKERS=1; `overrides` by
    variable name (NORN_PORT="8123"), None removing one (NORN_DATA_DIR=None: the default,
    ./.norn).

    The small pools and one HTTP worker: a `norn serve` is then two processes, each with
    its own pools, and up to four tests start one at once beside the suite's own pools,
    all on one PostgreSQL of 100 connections and two cores. What the tests ask of it
    does not depend on how many workers answer (tests/e2e/test_serve_workers.py runs
    three)."""
    env = {
        **os.environ,
        "NORN_DATABASE_URL": settings.database_url or "",
        "NORN_NATS_URL": settings.nats_url or "",
        "NORN_NATS_STREAM": settings.nats_stream,
        "NORN_SUBJECT_PREFIX": settings.subject_prefix,
        "NORN_DATA_DIR": str(settings.data_dir),
        "NORN_LOG_LEVEL": "WARNING",
        "NORN_DB_POOL_SIZE": "4",
        "NORN_HTTP_WORKERS": "1",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
