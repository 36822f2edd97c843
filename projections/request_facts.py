"""The versions that authenticate a request (application/authentication.py), read on the
event loop: AsyncRequestFactsReader.

Every authenticated request asks for the current versions of its session, user and
tenant (or API key, tenant and creator): one statement each, with a pool checkout, a
round trip and a read-only transaction of its own, was a tenth of an API process's CPU
under load. Here the requests that ask while a read is out go together in the next one
(group commit's pattern, application/group_commit.py, for a read): under load a read
answers several requests; alone, a request waits for its own read, sent at once.

A request never joins a read already sent: what it is told is as of after it asked, as
if it had read alone (a session revoked before the request arrived is seen revoked)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from application.ports import RequestFacts

VERSIONS = (
    "SELECT originator_id, max(originator_version) FROM norn_events"
    " WHERE originator_id = ANY(%s) GROUP BY originator_id"
)
"""The current version of each of some aggregates (those that exist), in one statement."""


class _Read:
    """The ids asked for by the requests waiting for one statement, and its answer."""

    __slots__ = ("answer", "ids", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ids: set[UUID] = set()
        self.answer: asyncio.Future[dict[UUID, int]] = loop.create_future()
        # Retrieved even if every waiter was cancelled: no "never retrieved" warning.
        self.answer.add_done_callback(lambda f: f.cancelled() or f.exception())


class RequestFactsQuery:
    """AsyncRequestFactsReader on the event loop's pool (autocommit): at most one read out
    at a time; the requests that ask meanwhile wait for the next, sent when it returns."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._collecting: _Read | None = None
        self._out = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, aggregate_ids: Sequence[UUID]) -> RequestFacts:
        loop = asyncio.get_running_loop()
        read = self._collecting
        if read is None or read.loop is not loop:
            read = self._collecting = _Read(loop)
            if not self._out:
                # After the callbacks ready now: requests parsed in this turn of the loop
                # go in this read too.
                loop.call_soon(self._send)
        read.ids.update(aggregate_ids)
        # shield: a request cancelled (its client gone) must not cancel the others' read
        versions = await asyncio.shield(read.answer)
        return RequestFacts(versions={i: versions[i] for i in aggregate_ids if i in versions})

    def _send(self) -> None:
        read, self._collecting = self._collecting, None
        if read is None:
            return
        self._out = True
        task = read.loop.create_task(self._answer(read))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, read: _Read) -> None:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(VERSIONS, (list(read.ids),), prepare=True)
                rows = await cursor.fetchall()
        except BaseException as error:  # every waiter fails as its own read would have
            if not read.answer.done():
                read.answer.set_exception(
                    error if isinstance(error, Exception) else ConnectionError("read cut short")
                )
            if not isinstance(error, Exception):
                raise
        else:
            read.answer.set_result({key: int(value) for key, value in rows})
        finally:
            self._out = False
            if self._collecting is not None:
                self._send()
