"""Fresh test databases made ahead of the tests that take them.

Every integration test gets a database of its own, copied from a migrated template.
`CREATE DATABASE ... TEMPLATE` writes the whole copy (about 9 MB, system catalogs
mostly) to the WAL and flushes it: 0.25-0.5 s each, a seventh of the suite's time when
every test waited for its own. Here one thread per test process makes them ahead, a
few at a time, while the tests before run (which mostly wait on their app), and drops
the used ones in the background too (DROP ... WITH (FORCE) ends what a test left
connected, as before)."""

from __future__ import annotations

import logging
import queue
import threading
import uuid

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

AHEAD = 2
"""Databases kept ready: a test that takes one finds the next already made."""


class DatabaseSupply:
    def __init__(self, admin_url: str, template: str, ahead: int = AHEAD) -> None:
        self._admin_url = admin_url
        self._template = template
        self._ready: queue.Queue[str] = queue.Queue(maxsize=ahead)
        self._used: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="database-supply", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The name of a fresh database, this caller's alone."""
        while True:
            try:
                return self._ready.get(timeout=1.0)
            except queue.Empty:
                if self._failure is not None:
                    raise RuntimeError("could not make a test database") from self._failure
                if not self._thread.is_alive():
                    raise RuntimeError("the test database supply stopped") from None

    def give_back(self, name: str) -> None:
        """A database a test is done with: dropped in the background."""
        self._used.put(name)

    def close(self) -> None:
        """Stop making databases, and drop every one made or given back."""
        self._stop.set()
        self._thread.join()
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            for waiting in (self._ready, self._used):
                while not waiting.empty():
                    _drop(conn, waiting.get_nowait())

    def _run(self) -> None:
        try:
            with psycopg.connect(self._admin_url, autocommit=True) as conn:
                while not self._stop.is_set():
                    # Drops first: a database given back holds disk and, until FORCE
                    # ends them, the connections a test left open.
                    try:
                        _drop(conn, self._used.get_nowait())
                        continue
                    except queue.Empty:
                        pass
                    if self._ready.full():
                        self._stop.wait(0.02)
                        continue
                    name = f"norn_t_{uuid.uuid4().hex[:12]}"
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(name), sql.Identifier(self._template)
                        )
                    )
                    self._ready.put(name)
        except BaseException as error:
            log.exception("test database supply failed")
            self._failure = error


def _drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
