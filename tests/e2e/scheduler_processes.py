"""`norn scheduler` processes for tests that kill them: started against the test's
PostgreSQL and NATS, and a way to kill one while it is in the middle of a pass."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from infrastructure.settings import Settings
from tests.support.processes import NORN, norn_env

PROJECT = Path(__file__).resolve().parents[2]


@contextmanager
def scheduler_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`norn scheduler` against the test's Postgres and NATS, its output to the file
    `log`; killed on exit if still alive. Its PostgreSQL sessions carry the application
    name `norn-scheduler-<log's stem>`, which tells them apart whether the server is
    reached over TCP or a Unix socket (the embedded one of a run without servers)."""
    url = make_conninfo(settings.database_url or "", application_name=app_name(log))
    env = norn_env(
        settings,
        NORN_DATABASE_URL=url,
        NORN_JWT_SECRET=settings.jwt_secret or "",
        NORN_DB_POOL_SIZE="4",
    )
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603
            [NORN, "scheduler"], env=env, cwd=PROJECT, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def app_name(log: Path) -> str:
    return f"norn-scheduler-{log.stem}"


_IN_TRANSACTION = (
    "SELECT application_name, query FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
)


def kill_in_a_pass(
    database_url: str,
    processes: dict[str, subprocess.Popen[bytes]],
    limit: float,
    worst: str = "UPDATE job_schedules SET cursor",
) -> tuple[subprocess.Popen[bytes], str] | None:
    """SIGKILL the first of `processes` seen in the middle of a pass, preferably while it
    saves its bookkeeping (its runs are appended, committed, and not yet counted: the
    worst moment to die), else, after `limit` seconds of waiting for that, the first seen
    in a pass at all. The one killed and its session's last statement; None (nothing
    killed) if none was seen in a pass for another `limit` seconds.

    `processes` by the application name of their sessions (`app_name`). In a pass: one
    of its PostgreSQL sessions is in a
    transaction with a transaction id: it holds due jobs (SELECT ... FOR UPDATE takes
    one). An idle scheduler's passes lock nothing and take none. Saving: that session's
    last statement is the UPDATE of job_schedules (or, for another kind of pass, contains
    `worst`)."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < started + 2 * limit:
            patient = time.monotonic() < started + limit
            for name, query in conn.execute(_IN_TRANSACTION).fetchall():
                saving = worst in query
                if name in processes and (saving or not patient):
                    victim = processes[name]
                    victim.kill()
                    victim.wait(timeout=10)
                    return victim, " ".join(query.split())
            time.sleep(0.002)
    return None
