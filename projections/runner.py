"""Keeps read models up to date: the projector role. A runner keeps one projection, or a
group of them fed by one consumer (`norn serve` and `norn projector` run every
projection in one group): each event is then fetched, decoded and acked once, not once
per projection, and each projection still applies, tracks and persists on its own.

Lifecycle of a runner (docs/architecture.md §6):

1. Leadership: one active runner per projection (or group) across all processes, by a Postgres
   advisory lock held on the process's leadership session (infrastructure/leadership.py,
   projections/sessions.py); the others stand by and retry. The lock is an efficiency
   measure only: correctness comes from the tracking row, which every batch that
   applies something locks, so even two active runners could not double-apply.
2. Bind a durable JetStream pull consumer (one per runner, ordered processing), THEN
   catch up from the event store's notification log. Binding first means nothing
   published during the catch-up can be missed.
3. Follow NATS in batches (pull requests kept open ahead of the runner,
   infrastructure/jetstream_pull.py): apply, commit, only then ack. A batch with
   nothing for this projection only moves the position in memory, persisted lazily
   (projections/positions.py). Loss is detected by a jump in the JetStream stream
   sequence (never by the position, which has gaps), and answered by catching up from
   the store, as is any NATS error.
   Beside the leading relay of its own process (`norn serve`), a runner given the
   relay's feed follows that instead: the windows the relay reads, in memory
   (infrastructure/relay_feed.py); its JetStream consumer is deleted meanwhile and made
   anew when the relay stops leading.
4. NATS unreachable: poll the store every `poll_interval` seconds until it is back, so
   reads stay fresh. The same happens if NATS is up but silent while the store is ahead
   (the relay is down) for `relay_stall_after` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infrastructure.jetstream_pull import ContinuousPull
from infrastructure.leadership import Check, LeadershipLost, lock_key
from infrastructure.notification_log import max_position
from infrastructure.relay_feed import RelayFeed
from infrastructure.supervision import Backoff, pause, supervise
from projections.broadcast import PositionBroadcast
from projections.consumer import (
    ack_through,
    bind_consumer,
    connect_nats,
    decode_batch,
    durable_name,
    take_rest_of_window,
)
from projections.members import MEMBER_RETRY, Members
from projections.positions import (
    IDLE_PERSIST_SECONDS,
    LivePositions,
    PositionKeeper,
    replay_from_store,
)
from projections.projection import Projection
from projections.sessions import RunnerSessions

log = logging.getLogger(__name__)

_TERM_BACKOFF = Backoff(first=0.4, cap=5.0)
"""Pauses before competing again after a leadership term failed (or was lost)."""
_BATCH_BACKOFF = Backoff(first=0.2, cap=5.0)
"""Pauses before catching up from the store after a failed batch."""
_EXIT_SECONDS = 3.0  # to persist the position on stop
_QUIET_START_SECONDS = 3.0  # a first NATS connection this slow is worth a warning


class ProjectionRunner:
    def __init__(
        self,
        projections: Projection | Sequence[Projection],
        *,
        database_url: str,
        nats_url: str,
        stream: str,
        subject_prefix: str,
        batch_size: int = 256,
        poll_interval: float = 0.5,
        fetch_timeout: float = 1.0,
        ack_wait: float = 60.0,
        relay_stall_after: float | None = 5.0,
        standby_interval: float = 1.0,
        persist_interval: float = 1.0,
        idle_persist: float | None = IDLE_PERSIST_SECONDS,
        positions: LivePositions | None = None,
        sessions: RunnerSessions | None = None,
        name: str | None = None,
        member_retry: Backoff = MEMBER_RETRY,
        feed: RelayFeed | None = None,
    ) -> None:
        """`projections`: one, or a group that shares this runner's consumer, named
        `name` (its lock and consumer); `positions`: where to publish the passed
        positions for waiters in this process; `sessions`: the leadership session and
        pool shared with the process's other runners (the runner opens its own when not
        given); `idle_persist`: seconds with nothing to do after which the passed
        positions are written (None: only every `persist_interval`); `feed`: the
        windows the relay of this process reads (infrastructure/relay_feed.py),
        followed instead of NATS while that relay leads."""
        group = (projections,) if isinstance(projections, Projection) else tuple(projections)
        assert group, "a runner keeps at least one projection"
        assert name is not None or len(group) == 1, "a group of projections is named"
        self.projections = group
        self.projection = group[0]
        self.name = name or group[0].name
        self.database_url = database_url
        self.nats_url = nats_url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        self.relay_stall_after = relay_stall_after
        self.idle_persist = idle_persist
        self.standby_interval = standby_interval
        self.following = asyncio.Event()
        """Set while bound to NATS and caught up (health checks, tests)."""
        self.is_leader = False
        self.positions = positions or LivePositions()
        keepers = [
            PositionKeeper(
                projection,
                persist_interval=persist_interval,
                live=self.positions,
                group=sessions.keepers if sessions is not None else None,
            )
            for projection in group
        ]
        self.members = Members(keepers, member_retry)
        """Each projection's passed position (they outlive leadership terms: they stay
        true), and which members are set aside."""
        self.keeper = keepers[0]
        self._broadcast = PositionBroadcast(subject_prefix)
        self._shared_sessions = sessions
        self._sessions: RunnerSessions | None = None
        self._sub: ContinuousPull | None = None
        self._last_seq: int | None = None  # highest stream sequence known to be covered
        self._needs_catch_up = True
        self._rebind = False
        self._held: list[Msg] = []  # messages of a failed batch, acked after a catch-up
        self._quiet_since: float | None = None
        """When fetches began to come back empty (None: the last one brought messages)."""
        self._polling = False  # only to log the switch to polling once
        self._quiet_until = 0.0
        self._nc: Client | None = None  # while leading
        self._feed = feed
        self._fed = False
        """Following the relay of this process through `feed`, not NATS."""

    @property
    def durable_name(self) -> str:
        return durable_name(self.subject_prefix, self.name)

    @property
    def passed(self) -> int:
        """The lowest position the runner's following projections have all passed."""
        return self.members.passed

    async def catch_up(self) -> int:
        """Apply everything in the event store after the tracked positions, on its own
        connection (safe next to a running runner); return the number of events read."""
        read = 0
        async with await AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            for projection in self.projections:
                keeper = PositionKeeper(projection, live=self.positions)
                read += await replay_from_store(
                    conn, projection, batch_size=self.batch_size, keeper=keeper
                )
                await keeper.persist(conn, now=True)
        return read

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: stand by for the projection's lock, then keep its read
        model up to date. Errors are logged and retried, never fatal."""
        sessions = self._shared_sessions or RunnerSessions(self.database_url, max_size=1)
        if self._shared_sessions is None:
            await sessions.open()
        self._sessions = sessions
        try:
            await supervise(
                f"projection {self.name}: runner",
                lambda: self._term(stop, sessions),
                stop=stop,
                backoff=_TERM_BACKOFF,
                quiet=(LeadershipLost,),  # the database dropped the session: no traceback
                logger=log,
            )
        finally:
            if self._shared_sessions is None:
                await sessions.close()

    async def _term(self, stop: asyncio.Event, sessions: RunnerSessions) -> None:
        """One term: stand by for the lock, then lead until stopped or the lock is lost."""
        key = lock_key("projection", self.name)
        try:
            async with sessions.locks.leadership(key, stop, self.standby_interval) as check:
                if check is None:
                    return  # stopped while standing by
                self.is_leader = True
                log.info("projection %s: active (lock acquired)", self.name)
                await self._lead(stop, check)
        finally:
            self.is_leader = False
            self.following.clear()

    async def _lead(self, stop: asyncio.Event, check: Check) -> None:
        connecting = asyncio.create_task(self._connect_nats())
        self._quiet_until = time.monotonic() + _QUIET_START_SECONDS
        self._nc = None
        self._needs_catch_up = True
        try:
            await supervise(
                f"projection {self.name}: batch",
                lambda: self._step(stop, check, connecting),
                stop=stop,
                backoff=_BATCH_BACKOFF,
                # A lost lock ends the term; _compete competes again.
                raises=(LeadershipLost,),
                logger=log,
            )
        finally:
            connecting.cancel()
            await self._persist_on_exit()
            await self._close(self._nc)

    async def _step(
        self, stop: asyncio.Event, check: Check, connecting: asyncio.Task[Client]
    ) -> None:
        # A lost session means the lock is gone and another process may be active.
        await check()
        if self._nc is None and connecting.done():
            self._nc = connecting.result()  # raises only for a bad URL: it retries the rest
        nc = self._nc
        try:
            await self._persist()
            if nc is None or not nc.is_connected:
                await self._poll_store(stop, connecting, connected_before=nc is not None)
                return
            if self._feed is not None and self._feed.live:
                await self._follow_relay(stop, nc, self._feed)
            else:
                await self._follow_nats(stop, nc)
            # The API processes' read-your-writes waits learn of it now (broadcast.py).
            await self._broadcast.send(nc, self.members.keepers)
        except Exception:
            # Back to a known state (the supervisor logs and pauses): bind again (the
            # subscription or consumer may be what failed) and catch up from the store.
            self.following.clear()
            self._rebind = True
            self._needs_catch_up = True
            raise

    async def _follow_nats(self, stop: asyncio.Event, nc: Client) -> None:
        if self._fed:
            if stop.is_set():
                return  # the process is stopping, its relay first: no consumer to bind
            log.info("projection %s: the relay of this process stopped leading", self.name)
            self._leave_relay()
        if self._sub is None or self._rebind:
            await self._bind(nc)
            self._polling = False
        if self._needs_catch_up:
            await self._catch_up_now()
            self.following.set()
        assert self._sub is not None
        # Whatever has arrived, or the first to arrive: the consumer's pull
        # requests are kept open, so the messages came while the last batch applied.
        wait, idle = await self._before_take()
        messages = await self._sub.take(self.batch_size, wait, stop)
        if messages:
            # A command's events in one batch: its last is often one no read model
            # here applies, and its position reaches the rows only with a batch.
            await take_rest_of_window(self._sub, messages, self.batch_size, stop)
            await self._apply_messages(messages)
        else:
            await self._nothing_came(idle)

    async def _follow_relay(self, stop: asyncio.Event, nc: Client, feed: RelayFeed) -> None:
        """The relay of this process leads: apply the windows it reads, handed over in
        memory (infrastructure/relay_feed.py), instead of their messages from NATS."""
        if not self._fed:
            await self._leave_nats(nc)
            feed.attach()  # before the catch-up: nothing read after it is missed
            self._fed = True
            log.info("projection %s: following the relay of this process", self.name)
            self._needs_catch_up = True
            self._polling = False
        if self._needs_catch_up:
            await self._catch_up_now(ack_held=False)
            self.following.set()
        wait, idle = await self._before_take()
        window = await feed.take(self.batch_size, wait, stop)
        if window is None:
            await self._nothing_came(idle)
            return
        after, events = window
        if after > self.passed:
            # Windows were dropped (this runner fell behind): the store has them.
            log.info(
                "projection %s: windows missed after %d; reading the store", self.name, self.passed
            )
            await self._catch_up_now(ack_held=False)
        await self.members.apply(self._pool, events)
        self._quiet_since = None

    async def _before_take(self) -> tuple[float, float | None]:
        """Set-aside members retried; how long to wait for the next batch, and after how
        long with nothing the passed positions the rows lack are written (None: none)."""
        await self.members.retry_set_aside(self._pool, batch_size=self.batch_size)
        wait = self.members.idle_at_most(self.fetch_timeout)
        idle = self.idle_persist if self.members.ahead else None
        return min(wait, idle or wait), idle

    async def _nothing_came(self, idle: float | None) -> None:
        if idle is not None:
            await self._persist(now=True)  # idle: the rows catch up (positions.py)
        await self._check_relay_stall()

    async def _leave_nats(self, nc: Client) -> None:
        """Stop following the JetStream consumer, and delete it: left behind, it would
        hold every message published meanwhile and deliver them all (to be skipped by
        position) on the day this runner follows NATS again. `_bind` then makes it anew
        after the stream's last message, and the catch-up from the store covers the rest."""
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        self._held = []  # the consumer goes; the catch-up covers what they carried
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_consumer(self.stream, self.durable_name)
        self._rebind = True
        self._last_seq = None

    def _leave_relay(self) -> None:
        """Stop following the relay beside it: the next NATS step binds anew and catches up."""
        if self._feed is not None:
            self._feed.detach()
        self._fed = False
        self._rebind = True
        self._needs_catch_up = True

    async def _connect_nats(self) -> Client:
        async def on_reconnect() -> None:
            # Server state may be gone (stream, consumer): bind again and catch up.
            self._rebind = True
            log.info("projection %s: NATS reconnected", self.name)

        return await connect_nats(self.nats_url, f"norn-projection-{self.name}", on_reconnect)

    @property
    def _pool(self) -> AsyncConnectionPool:
        assert self._sessions is not None, "only while running"
        return self._sessions.pool

    async def _persist(self, *, now: bool = False) -> None:
        await self.members.persist(self._pool, now=now)

    async def _persist_on_exit(self) -> None:
        try:
            await asyncio.wait_for(self._persist(now=True), _EXIT_SECONDS)
        except Exception as error:
            # Only costs a re-read of events without a handler after the restart.
            log.warning(
                "projection %s: could not persist position %d on stop: %r",
                self.name,
                self.passed,
                error,
            )

    async def _poll_store(
        self, stop: asyncio.Event, connecting: asyncio.Task[Client], *, connected_before: bool
    ) -> None:
        """NATS is down: keep the read model fresh from the store; bind again later."""
        if not self._polling and (connected_before or time.monotonic() > self._quiet_until):
            # Said once per outage; not during the first connection attempt of a start.
            self._polling = True
            log.warning(
                "projection %s: NATS unavailable; polling the event store every %.1fs",
                self.name,
                self.poll_interval,
            )
        self.following.clear()
        self._rebind = True
        await self._catch_up_now(ack_held=False)
        if not connected_before and connecting.done():
            return  # the first connection came during the catch-up: follow it now
        # Woken early by the first connection, so a normal start does not wait a poll.
        await pause(
            stop,
            self.members.idle_at_most(self.poll_interval),
            *([] if connecting.done() else [connecting]),
        )

    async def _bind(self, nc: Client) -> None:
        self._rebind = False
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        self._sub, self._last_seq = await bind_consumer(
            nc,
            stream=self.stream,
            subject_prefix=self.subject_prefix,
            durable=self.durable_name,
            batch_size=self.batch_size,
            ack_wait=self.ack_wait,
            replaces=self._replaced_durables(),
        )
        # The stream's last sequence before binding is covered by this catch-up.
        self._needs_catch_up = True

    def _replaced_durables(self) -> tuple[str, ...]:
        """The consumers of the group's members when each had a runner of its own (an
        earlier Norn's): left alone they would hold every message for nobody."""
        if len(self.projections) == 1 and self.name == self.projection.name:
            return ()
        return tuple(durable_name(self.subject_prefix, p.name) for p in self.projections)

    async def _catch_up_now(self, *, ack_held: bool = True) -> None:
        read = await self.members.catch_up(self._pool, batch_size=self.batch_size)
        if read:
            log.info("projection %s: caught up %d events from the store", self.name, read)
        self._needs_catch_up = False
        self._quiet_since = None
        if ack_held:
            # The store catch-up committed everything those messages carried.
            await ack_through(self._held)
            self._held = []

    async def _apply_messages(self, messages: list[Msg]) -> None:
        events, highest, gap = decode_batch(messages, self._last_seq, self.name)
        try:
            if gap:
                await self._catch_up_now()
            # Side by side; a member that fails while others do not is set aside to
            # catch up from the store on its own (projections/members.py).
            await self.members.apply(self._pool, events)
        except BaseException:
            self._held.extend(messages)  # acked once a catch-up has covered them
            raise
        await ack_through(messages)
        self._last_seq = highest
        self._quiet_since = None

    async def _check_relay_stall(self) -> None:
        """Fetches empty for a while: if the store is ahead, the relay is not publishing;
        catch up from the store rather than serve stale reads. Counted from the first
        empty fetch, not from the last batch: a runner that spent those seconds waiting
        for a connection (its process's other projections busy with a burst) has not
        been told "nothing" by NATS, and reading the store then only adds to the load."""
        if self.relay_stall_after is None:
            return
        now = time.monotonic()
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < self.relay_stall_after:
            return
        self._quiet_since = now
        async with self._pool.connection() as conn:
            head = await max_position(conn)
        if head > self.passed:
            log.warning(
                "projection %s: nothing from NATS for %.0fs while the store is ahead "
                "(is the relay running?); catching up from the store",
                self.name,
                self.relay_stall_after,
            )
            await self._catch_up_now()

    async def _close(self, nc: Client | None) -> None:
        self.following.clear()
        if self._fed:
            self._leave_relay()
        if self._sub is not None:
            await self._sub.close()
        self._sub = None
        self._held = []
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)
