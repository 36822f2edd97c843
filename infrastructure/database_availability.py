"""Fail fast while PostgreSQL is down, recover at once when it is back
(docs/architecture.md §9, "PostgreSQL outages").

psycopg_pool on its own handles an outage badly for an API: a request waits the whole
pool timeout (30 s) for a connection that cannot come; connections that died with the
server are handed out afterwards; and the pool reconnects on a backoff that doubles,
so after a long outage its next attempt can be many seconds after the server is back.

Here every pool of a process shares one `DatabaseAvailability`:

- a checkout looks at the connection's socket (one `poll`, no round trip): a server
  that went away has closed it, so it is readable while idle. Such a connection is
  tested, and if dead discarded together with every dead one idle beside it;
- a dead connection, or a wait for a connection that times out a slice (0.25 s), makes
  the database *suspect*: a probe thread connects; if that fails the database is *down*
  and every checkout is refused at once (`DatabaseUnavailable`, HTTP 503) while the
  probe tries again every 0.25 s; its first success ends the outage;
- the pools give up a failed reconnect after `RECONNECT_TIMEOUT` seconds instead of
  backing off for minutes, so when the outage ends they connect again on demand.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from application.errors import ServiceUnavailable

log = logging.getLogger(__name__)

WAIT_SLICE = 0.25
"""A checkout waits for a connection in slices of this long, looking at the database's
availability between them."""
PROBE_INTERVAL = 0.25
"""Seconds between connection attempts while the database is down."""
RECONNECT_TIMEOUT = 2.0
"""How long a pool keeps retrying one failed connection (psycopg_pool's default is 5
minutes, on a doubling backoff); after that it connects again when a checkout needs it."""
SUSPICION_COOLDOWN = 1.0
"""After a probe found the database answering, suspicions are ignored this long (a
pool that is merely busy times out slices without the database being down)."""


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL does not answer; the request may be retried shortly."""


class DatabaseAvailability:
    """Whether this process can reach PostgreSQL, shared by all its pools."""

    def __init__(self, database_url: str, *, connect: Callable[[], Any] | None = None) -> None:
        self._connect = connect or (
            lambda: psycopg.connect(database_url, connect_timeout=2, autocommit=True)
        )
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._answered_at = float("-inf")
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        self.outages = 0
        """How many outages this process has seen (a metric)."""

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def down_for(self) -> float:
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def raise_if_down(self) -> None:
        if self._down_since is not None:
            raise DatabaseUnavailable("the database is unavailable; retry shortly")

    def suspect(self) -> None:
        """Something suggests the server is gone: find out, off the caller's thread."""
        with self._lock:
            if self._closed.is_set() or (self._prober is not None and self._prober.is_alive()):
                return
            if time.monotonic() - self._answered_at < SUSPICION_COOLDOWN:
                return
            self._prober = threading.Thread(
                target=self._probe_until_answered, name="norn-db-probe", daemon=True
            )
            self._prober.start()

    def close(self) -> None:
        self._closed.set()

    def _probe_until_answered(self) -> None:
        while not self._closed.is_set():
            try:
                self._connect().close()
            except Exception as error:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self.outages += 1
                    log.warning(
                        "PostgreSQL does not answer (%s): refusing requests until it does",
                        type(error).__name__,
                    )
                self._closed.wait(PROBE_INTERVAL)
                continue
            if self._down_since is not None:
                log.warning("PostgreSQL answers again after %.1f s", self.down_for())
            self._answered_at = time.monotonic()
            self._down_since = None
            return


def has_pending_input(conn: Any) -> bool:
    """True if an idle connection's socket is readable or gone: the server closed it (or
    sent something unasked). One poll, no round trip."""
    if conn.closed:
        return True
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except Exception:
        return True


class GuardedPoolMixin:
    """getconn for a psycopg_pool.ConnectionPool (see the module's docstring)."""

    availability: DatabaseAvailability

    def getconn(self, timeout: float | None = None) -> Any:
        total = self.timeout if timeout is None else timeout  # type: ignore[attr-defined]
        deadline = time.monotonic() + total
        while True:
            self.availability.raise_if_down()
            remaining = deadline - time.monotonic()
            try:
                conn = super().getconn(max(min(remaining, WAIT_SLICE), 0.001))  # type: ignore[misc]
            except PoolTimeout:
                if remaining <= WAIT_SLICE:
                    raise PoolTimeout(f"couldn't get a connection after {total:.2f} sec") from None
                self.availability.suspect()
                continue
            if not has_pending_input(conn):
                return conn
            try:
                self.check_connection(conn)  # type: ignore[attr-defined]
                return conn
            except Exception:
                conn.close()
                self.putconn(conn)  # type: ignore[attr-defined]  # discarded and replaced
            self.availability.suspect()
            self.check()  # type: ignore[attr-defined]  # its siblings likely died with it


class AsyncGuardedPoolMixin:
    """getconn for a psycopg_pool.AsyncConnectionPool (see the module's docstring)."""

    availability: DatabaseAvailability

    async def getconn(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (psycopg_pool signature)
        total = self.timeout if timeout is None else timeout  # type: ignore[attr-defined]
        deadline = time.monotonic() + total
        while True:
            self.availability.raise_if_down()
            remaining = deadline - time.monotonic()
            try:
                conn = await super().getconn(max(min(remaining, WAIT_SLICE), 0.001))  # type: ignore[misc]
            except PoolTimeout:
                if remaining <= WAIT_SLICE:
                    raise PoolTimeout(f"couldn't get a connection after {total:.2f} sec") from None
                self.availability.suspect()
                continue
            if not has_pending_input(conn):
                return conn
            try:
                await self.check_connection(conn)  # type: ignore[attr-defined]
                return conn
            except Exception:
                await conn.close()
                await self.putconn(conn)  # type: ignore[attr-defined]
            self.availability.suspect()
            await self.check()  # type: ignore[attr-defined]


class GuardedConnectionPool(GuardedPoolMixin, ConnectionPool):  # type: ignore[type-arg]
    def __init__(self, *args: Any, availability: DatabaseAvailability, **kwargs: Any) -> None:
        self.availability = availability
        kwargs.setdefault("reconnect_timeout", RECONNECT_TIMEOUT)
        super().__init__(*args, **kwargs)


class GuardedAsyncConnectionPool(AsyncGuardedPoolMixin, AsyncConnectionPool):  # type: ignore[type-arg]
    def __init__(self, *args: Any, availability: DatabaseAvailability, **kwargs: Any) -> None:
        self.availability = availability
        kwargs.setdefault("reconnect_timeout", RECONNECT_TIMEOUT)
        super().__init__(*args, **kwargs)
