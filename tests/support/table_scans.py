"""How often PostgreSQL scanned a table whole: for tests that show a query reads by
index (pg_stat_xact_user_tables counts the scans of the current transaction)."""

from __future__ import annotations

import psycopg


def seq_scans(conn: psycopg.Connection, table: str) -> int:
    """Sequential scans of `table` in this transaction so far."""
    row = conn.execute(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = %s", (table,)
    ).fetchone()
    assert row is not None
    return int(row[0])
