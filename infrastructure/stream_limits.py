"""How many event streams (SSE and WebSocket together) are open per tenant, across API
processes, for the limit per plan (NORN_STREAM_LIMITS; docs/architecture.md "Live feeds").

One row per open stream in `stream_connections` (migration 0016). Admission is one
transaction under an advisory lock per scope (a tenant, or `platform`): it deletes the
scope's rows that nobody beats any more, counts the rest and inserts the new row only
below the limit, so two processes admitting at once cannot both take the last slot. The
process serving a stream beats its rows every BEAT_SECONDS in one statement; a row not
beaten for EXPIRE_SECONDS (its process was killed) no longer counts. A stream's row is
deleted when it ends, whatever ended it: `release` is synchronous and idempotent, so a
`finally` that runs while its task is being cancelled still frees the slot (the delete
runs in a task of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from psycopg_pool import AsyncConnectionPool

from infrastructure.leadership import lock_key
from infrastructure.supervision import Backoff, supervise

log = logging.getLogger(__name__)

BEAT_SECONDS = 10.0
EXPIRE_SECONDS = 30.0
"""A row not beaten for this long belongs to a dead process: three beats missed."""
RETRY_AFTER_SECONDS = 5
"""What a refused stream is told to wait (a slot frees when a stream of its scope ends)."""

_ADMIT = """
INSERT INTO stream_connections (id, scope, kind, actor)
SELECT %(id)s, %(scope)s, %(kind)s, %(actor)s
 WHERE (SELECT count(*) FROM stream_connections WHERE scope = %(scope)s) < %(limit)s
RETURNING id
"""
_EXPIRE = """
DELETE FROM stream_connections
 WHERE scope = %(scope)s AND beaten_at < now() - make_interval(secs => %(expire)s)
"""
# An update, never an insert: a beat that raced a release must not bring its row back. (A
# row an admission deleted while this process could not beat it, in a database outage
# longer than EXPIRE_SECONDS, stays uncounted until its stream ends.)
_BEAT = "UPDATE stream_connections SET beaten_at = now() WHERE id = ANY(%s)"


def parse_stream_limits(text: str, plans: tuple[str, ...]) -> dict[str, int]:
    """NORN_STREAM_LIMITS (`free=5,pro=50,...`): open streams per plan, every one of
    `plans` exactly once; ValueError says what is wrong."""
    limits: dict[str, int] = {}
    for item in text.split(","):
        plan, _, value = item.strip().partition("=")
        plan = plan.strip()
        try:
            limit = int(value)
        except ValueError:
            raise ValueError(f"must read like free=5,pro=50 (open streams), not {item!r}") from None
        if not 1 <= limit <= 1_000_000:
            raise ValueError(f"{plan}: need 1 <= open streams <= 1000000")
        if plan not in plans:
            raise ValueError(f"names an unknown plan {plan!r} (plans: {', '.join(plans)})")
        if plan in limits:
            raise ValueError(f"sets {plan} twice")
        limits[plan] = limit
    missing = set(plans) - set(limits)
    if missing:
        raise ValueError(f"has no limit for {', '.join(sorted(missing))}")
    return limits


@dataclass(eq=False)
class StreamSlot:
    """One admitted stream; `release` it when the stream ends (idempotent)."""

    id: UUID
    scope: str
    kind: str
    actor: str
    _owner: StreamSlots | None = field(default=None, repr=False)

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.forget(self)


class StreamSlots:
    """Admits streams per scope up to a limit; `start`/`stop` run the beat (the API's
    lifespan does)."""

    def __init__(self, pool: AsyncConnectionPool, beat: float = BEAT_SECONDS) -> None:
        self._pool = pool
        self._beat = beat
        self._open: dict[UUID, StreamSlot] = {}
        self._deleting: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_change: Callable[[int], None] | None = None
        """Told the number of streams open here whenever it changes (shared metrics)."""

    async def admit(self, scope: str, kind: str, actor: str, limit: int) -> StreamSlot | None:
        """A slot in `scope`, or None when `limit` streams of it are open already."""
        slot = StreamSlot(uuid4(), scope, kind, actor)
        params = {
            "id": slot.id,
            "scope": scope,
            "kind": kind,
            "actor": actor,
            "limit": limit,
            "expire": EXPIRE_SECONDS,
        }
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("streams", scope),))
            await conn.execute(_EXPIRE, params)
            admitted = await (await conn.execute(_ADMIT, params)).fetchone()
        if admitted is None:
            return None
        slot._owner = self
        self._open[slot.id] = slot
        if self.on_change is not None:
            self.on_change(len(self._open))
        return slot

    def forget(self, slot: StreamSlot) -> None:
        """StreamSlot.release: no longer beaten, and its row deleted in the background."""
        if self._open.pop(slot.id, None) is None:
            return
        if self.on_change is not None:
            self.on_change(len(self._open))
        task = asyncio.get_running_loop().create_task(self._delete([slot.id]))
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    async def _delete(self, ids: list[UUID]) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute("DELETE FROM stream_connections WHERE id = ANY(%s)", (ids,))
        except Exception as error:  # it expires unbeaten instead
            log.warning("open streams: could not delete %d row(s): %s", len(ids), error)

    @property
    def open_here(self) -> int:
        """Streams this process serves now (metrics, tests)."""
        return len(self._open)

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="stream-slots-beat")

    async def stop(self) -> None:
        """Stop beating and delete this process's rows: its streams end with it."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._deleting:
            await asyncio.gather(*self._deleting, return_exceptions=True)
        if self._open:
            await self._delete(list(self._open))
            self._open.clear()

    async def _run(self) -> None:
        await supervise(
            "open streams: beat",
            self._beat_once,
            stop=self._stop,
            backoff=Backoff(first=1.0, cap=self._beat),
            logger=log,
        )

    async def _beat_once(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._beat):
                await self._stop.wait()
        ids = list(self._open)
        if not ids or self._stop.is_set():
            return
        async with self._pool.connection() as conn:
            await conn.execute(_BEAT, (ids,))
