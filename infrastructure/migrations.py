"""Applies the numbered SQL files in migrations/ in order, once each, recording them in
schema_migrations. Safe to run from several processes at once: they take turns on a
blocking advisory lock (waiting is right here: a process must not start before the
schema it needs exists), keyed like every other lock (infrastructure/leadership.py)."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

from infrastructure.leadership import lock_key

log = logging.getLogger(__name__)
_LOCK_KEY = lock_key("migrations", "schema")


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("migrations")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                log.info("applied migration %s", name)
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def pending(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        done = set()
        if exists and exists[0]:
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    return [name for name, _ in migration_files() if name not in done]
