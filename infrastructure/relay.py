"""The relay: publishes the event store's notification log (the outbox) to JetStream.

It is a tracked reader of the log whose "view" is the stream (docs/architecture.md §5): it resumes
from the position carried by the last message in the stream, publishes in windows and
advances only on acks. One relay per database and stream publishes at a time
(a Postgres advisory lock, infrastructure/leadership.py); the others wait on standby.

Every message also carries `Nats-Expected-Last-Sequence`, so JetStream stores the
stream as a gap-free prefix of the log: if a message is lost on a reconnect, every later
one is refused instead of stored, and "resume after the last message" stays sound. A
message re-published with the right expected sequence is dropped by `Nats-Msg-Id`. The
same chain lets one ack answer for a window: only its last event is published as a
request; that it is stored at the window's own sequence proves the rest were.

The relay also feeds the executors' work queue (infrastructure/work_queue.py): with a
`run.queued` or `run.requeued` event it publishes, in the same window, the run's work
item to `<stream>_WORK` (`Nats-Msg-Id` `run:<id>:<version>`, so a re-published item is
dropped too; no expected sequence: that stream is not a copy of the log). An item not
acked is owed, whether or not its event is known stored (an item early is harmless): the
relay publishes no further window until every owed item is acked, retrying across
reconnects. Only a relay that dies owing one
loses it; the executors' maintenance re-dispatches a run queued that long without an
item (infrastructure/executor_role.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import psycopg
from eventsourcing.persistence import Notification
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck, StreamInfo
from nats.js.errors import APIError, NotFoundError
from psycopg import AsyncConnection

from infrastructure.append_pokes import poke_subject
from infrastructure.envelope import CloudEvent, encode, subject_for, to_cloud_event
from infrastructure.leadership import AdvisoryLocks, LeadershipLost, Lease, lock_key
from infrastructure.nats import (
    FOLLOWING_HEADER,
    POSITION_HEADER,
    connect,
    ensure_stream,
    events_subjects,
)
from infrastructure.notification_log import read_with_head
from infrastructure.relay_feed import RelayFeed
from infrastructure.supervision import Backoff, supervise
from infrastructure.work_queue import (
    DISPATCHED,
    WorkItem,
    ensure_work_streams,
    work_stream,
    work_subject,
)

log = logging.getLogger(__name__)

WINDOW = 256
"""Messages in flight before the relay waits for their acks."""
ACK_TIMEOUT = 5.0
"""Seconds to wait for an ack. Events go as requests (js.publish), which answer a refusal
at once; work items go with publish_async, where a refusal surfaces only as this timeout:
nats-py 2.16 never resolves a publish_async future whose ack is an API error (it raises
inside its reply handler instead; nats-io/nats.py#985)."""
NATS_CONNECT_TIMEOUT = 5.0
"""nats.connect retries forever; bound each attempt so errors are logged and retried."""
POLL_INTERVAL = 0.25
"""Seconds between looks at the store while nothing happens: what no poke announced (an
append of a process without NATS, a poke lost in an outage) is published within this.
Appends of this process wake the relay directly, other processes' poke it."""
HELD_UP = 0.05
"""Seconds with committed events above the horizon after which the relay reads with the
precise horizon (it looks past running transactions that are not appends)."""
STANDBY_RETRY = 1.0
ERROR_BACKOFF = Backoff(first=1.0, cap=5.0)
"""Pauses after a failed pass (NATS or PostgreSQL down): a second, growing to five."""
QUICK_RETRY = 0.001
"""While committed events wait above the horizon (an append can be committed but not yet
readable while an older transaction runs, infrastructure/recorder.py, and nothing
signals its end), the relay looks again after this, doubling up to its poll interval.
With nothing waiting it looked again after a pass all the same: about 14 reads a
one-step run (of its 79 statements), where one per append does."""
STOP_SECONDS = 3.0
"""How long stopping waits for each part of the relay before it gives up on it."""


class WindowFailed(RuntimeError):
    """Part of a window was not acked; the stream decides where to resume."""


class WorkItemOwed(NamedTuple):
    """A run's work item, to publish to the work stream."""

    subject: str
    payload: bytes
    msg_id: str


class Outgoing(NamedTuple):
    """An event as the relay publishes it, and its run's work item if it has one."""

    position: int
    subject: str
    payload: bytes
    msg_id: str
    item: WorkItemOwed | None
    event: CloudEvent


def _failed(future: asyncio.Future[PubAck]) -> bool:
    return future.cancelled() or future.exception() is not None  # the exception retrieved


class PositionUnknown(RuntimeError):
    """The stream's last message carries no position: something else publishes to it."""


class Relay:
    def __init__(
        self,
        *,
        database_url: str,
        nats_url: str,
        stream: str,
        subject_prefix: str,
        batch_size: int = 500,
        poll_interval: float = POLL_INTERVAL,
        locks: AdvisoryLocks | None = None,
        feed: RelayFeed | None = None,
    ) -> None:
        """`locks`: the leadership session shared with the process's other roles (closed
        by its owner); without it the relay opens one of its own. `feed`: where the
        projector of this process takes each window the relay reads while it leads
        (infrastructure/relay_feed.py)."""
        self._database_url = database_url
        self._nats_url = nats_url
        self._stream = stream
        self._prefix = subject_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._own_locks = locks is None
        self._locks = locks or AdvisoryLocks(database_url)
        # One leader per stream: relays of different streams sharing a database do not
        # exclude each other.
        self._lease = Lease(self._locks, lock_key("relay", stream))
        self._position = 0  # last acked notification id
        self._stream_seq = 0  # stream sequence the next publish expects to follow
        self._stream_created: datetime | None = None  # tells a recreated stream apart
        self._synced = False
        self._held_since: float | None = None  # committed events waiting above the horizon
        self._owed: list[WorkItemOwed] = []  # work items of published events, not acked
        self._conn: AsyncConnection | None = None  # reads the log
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._wake_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._head = 0  # the store's head as last read (metrics)
        self._caught_up_at = time.monotonic()
        self._feed = feed
        if feed is not None:
            # While it leads, not only while its NATS connection is up: a reconnect
            # (then a resync with the stream) moved the projector to NATS and back, a
            # consumer made and deleted and two catch-ups each time. Windows read again
            # after the resync are skipped by position; a gap is read from the store.
            feed.source(lambda: self._lease.held)

    @property
    def published_position(self) -> int:
        """The last position JetStream acknowledged (or found in the stream on resync)."""
        return self._position

    @property
    def is_leader(self) -> bool:
        return self._lease.held

    @property
    def lag_events(self) -> int:
        """Positions between the store head (as last read) and the last published."""
        return max(0, self._head - self._position) if self.is_leader else 0

    @property
    def lag_seconds(self) -> float:
        """How long since the relay last had everything published (0 when it has)."""
        if self.lag_events == 0:
            return 0.0
        return time.monotonic() - self._caught_up_at

    def wake(self) -> None:
        """Nudge the relay after an append; safe from any thread. Appends in this process
        call it (the recorder's on_append); other processes' appends poke it over NATS
        (infrastructure/append_pokes.py), and the poll finds what no poke announced (no
        NOTIFY: see infrastructure/recorder.py)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_event.set)

    async def _poked(self, _msg: Msg) -> None:
        self._wake_event.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set. Errors are logged and retried, never raised: NATS
        or Postgres being down only delays publishing. Closes its connections on exit."""
        self._loop = asyncio.get_running_loop()
        # The work runs in tasks so that stopping interrupts any blocking step (a NATS
        # connect waiting for the server, a window waiting for acks).
        tasks = [asyncio.create_task(self._follow(stop), name="relay-follow")]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a client library slow to honour a cancel (a NATS connect, a
            # LISTEN session) must not hold up the process's shutdown.
            _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            if stuck:
                log.warning(
                    "relay for %s: %s did not stop within %ss; leaving it cancelled",
                    self._stream,
                    ", ".join(t.get_name() for t in stuck),
                    STOP_SECONDS,
                )
            try:
                await asyncio.wait_for(self.close(), STOP_SECONDS)
            except TimeoutError:
                log.warning("relay for %s: closing its connections timed out", self._stream)

    async def publish_pending(self) -> int:
        """One pass: connect if needed, take the leader lock (0 if another relay holds
        it), resync from the stream if needed, publish everything pending. Raises on
        failure, after marking the connections for reconnect and resync."""
        self._loop = asyncio.get_running_loop()
        self._wake_event.clear()  # appends from now on wake the next pass
        try:
            return await self._publish_pending()
        except (psycopg.Error, LeadershipLost):
            await self._drop_database()
            raise
        except (NatsError, TimeoutError, OSError, WindowFailed):
            await self._drop_nats()
            raise

    async def close(self) -> None:
        """Release the leader lock and close every connection."""
        await self._drop_database()
        await self._drop_nats()
        if self._own_locks:
            await self._locks.close()

    async def _follow(self, stop: asyncio.Event) -> None:
        delay = QUICK_RETRY
        woken = True
        held = False  # committed events waited above the horizon after the last pass

        async def step() -> None:
            nonlocal delay, woken, held
            published = await self.publish_pending()
            if not self.is_leader:
                await asyncio.sleep(STANDBY_RETRY)
                return
            was_held, held = held, self._head > self._position
            if not held:
                # Every committed event is published: the next append wakes or pokes
                # the relay, and the poll finds what nothing announced.
                delay = self._poll_interval
            elif published or woken or not was_held:
                # Committed events wait above the horizon, readable once the older
                # transactions end, which nothing signals: soon again (also when the
                # poll found them), then backing off.
                delay = QUICK_RETRY
            else:
                delay = min(delay * 2, self._poll_interval)
            woken = False
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 it returns instead of raising when the
                # stop's cancel comes as the event is set, and the relay then outlived
                # its stop (by STOP_SECONDS, in about one app stop of 25 in the tests).
                async with asyncio.timeout(delay):
                    await self._wake_event.wait()
                woken = True

        # Ends on `stop` itself too, not only on its cancel: a library's asyncio.wait_for
        # (Python 3.11) can swallow a cancel that comes as what it awaits completes, and
        # the loop then ran on until run() gave up on it (STOP_SECONDS).
        await supervise(
            f"relay for {self._stream}",
            step,
            stop=stop,
            backoff=ERROR_BACKOFF,
            # What outages cause: logged without a traceback (anything else has one).
            quiet=(psycopg.Error, NatsError, TimeoutError, OSError, WindowFailed, LeadershipLost),
            logger=log,
        )

    async def _publish_pending(self) -> int:
        conn = await self._database()
        js = await self._jetstream()
        # Owed items first, leader or not (one that lost the lead still owes them).
        await self._pay_owed(js)
        if not await self._lead():
            return 0
        if not self._synced:
            await self._resync(js)
        published = 0
        while True:
            batch, head = await read_with_head(
                conn, self._position, self._batch_size, precise=self._held_up()
            )
            self._head = max(self._head, head)
            if self._position >= self._head:
                self._caught_up_at = time.monotonic()
            if not batch:
                self._note_held_up(head)
                return published
            self._held_since = None
            for start in range(0, len(batch), WINDOW):
                published += await self._publish_window(js, batch[start : start + WINDOW])
            if len(batch) < self._batch_size and batch[-1].id >= head:
                return published  # it read up to the head: another read would find nothing

    def _held_up(self) -> bool:
        return self._held_since is not None and time.monotonic() - self._held_since > HELD_UP

    def _note_held_up(self, head: int) -> None:
        """Nothing safe to read: if committed events wait above the horizon (the head is
        beyond what was published), remember since when, so that a long transaction that
        is not an append cannot hold the relay back for longer than HELD_UP."""
        if head > self._position:
            self._held_since = self._held_since or time.monotonic()
        else:
            self._held_since = None

    async def _publish_window(self, js: JetStreamContext, window: list[Notification]) -> int:
        """Publish a window, every event but the last without asking for an ack: the
        expected-sequence chain lets the last one's ack answer for them all (JetStream
        stores a message only if the one before it was stored), which spares a future, an
        inbox reply and its decoding per event. Any other answer (a duplicate: a relay
        resuming from a stale point; a refusal; none) and the window goes again, one ack
        per event, which advances over the acked prefix, duplicates included, as far as it
        can."""
        outgoing, unpublishable = self._outgoing(window)
        if self._feed is not None and outgoing:
            # Before the publish: the projector beside the relay applies the window while
            # JetStream stores it. Everything after the position is in it (§4).
            self._feed.offer(self._position, [message.event for message in outgoing])
        acked = 0
        if outgoing:
            chained = await self._publish_chained(js, outgoing)
            acked = await self._publish_each(js, outgoing) if chained is None else chained
        if unpublishable is not None:
            # Never skip an event: what precedes it is published, the relay stalls on it.
            raise RuntimeError(f"cannot publish position {window[acked].id}") from unpublishable
        return acked

    def _outgoing(self, window: list[Notification]) -> tuple[list[Outgoing], Exception | None]:
        """The window's messages, up to the first event that cannot be turned into one."""
        outgoing: list[Outgoing] = []
        for notification in window:
            try:
                event = to_cloud_event(notification)
            except Exception as error:
                return outgoing, error
            item = None
            if event.type in DISPATCHED and event.tenant:
                item = self._work_item(event.tenant, event.subject, event.version)
            subject = subject_for(self._prefix, event)
            outgoing.append(
                Outgoing(notification.id, subject, encode(event), event.id, item, event)
            )
        return outgoing, None

    def _headers(self, message: Outgoing, offset: int, following: int) -> dict[str, str]:
        headers = {
            "Nats-Msg-Id": message.msg_id,
            POSITION_HEADER: str(message.position),
            Header.EXPECTED_LAST_SEQUENCE: str(self._stream_seq + offset),
        }
        if following:
            headers[FOLLOWING_HEADER] = str(following)
        return headers

    async def _publish_chained(self, js: JetStreamContext, outgoing: list[Outgoing]) -> int | None:
        """The fast path: the number published, or None unless the window is known stored,
        and then it goes again one by one. The last event goes as a request, not
        publish_async: a refusal then answers at once instead of after ACK_TIMEOUT
        (nats-io/nats.py#985). No answer at all raises.

        Every work item of the window not acked is owed, whatever happened: when the
        window is not known stored, some of its events may be (a lost ack, a window cut
        short by a reconnect), and the stream is where the relay resumes from, so nothing
        would publish their items again. Owing an item whose event is not stored yet is
        harmless: the claim decides on the run's own events, and the item is dropped by
        its id when it goes again with its event."""
        assert self._nc is not None
        items: list[tuple[WorkItemOwed, asyncio.Future[PubAck]]] = []
        ack: PubAck | None = None
        stored = False
        try:
            for offset, message in enumerate(outgoing):
                headers = self._headers(message, offset, len(outgoing) - 1 - offset)
                if offset < len(outgoing) - 1:
                    # What js.publish adds: a message bound for another stream is refused.
                    headers[Header.EXPECTED_STREAM] = self._stream
                    await self._nc.publish(message.subject, message.payload, headers=headers)
                else:
                    with contextlib.suppress(APIError):
                        ack = await js.publish(
                            message.subject,
                            message.payload,
                            timeout=ACK_TIMEOUT,
                            stream=self._stream,
                            headers=headers,
                        )
                if message.item is not None:
                    items.append((message.item, await self._publish_item(js, message.item)))
            stored = (
                ack is not None
                and not ack.duplicate
                and ack.seq == self._stream_seq + len(outgoing)
            )
            if stored and items:  # else the slow path pays them: no wait for a refusal
                await asyncio.wait([future for _, future in items], timeout=ACK_TIMEOUT)
        finally:
            for _, future in items:
                if not future.done():
                    future.cancel()
            acked = {item for item, future in items if not _failed(future)}
            for message in outgoing:
                if message.item is not None and message.item not in acked:
                    self._owe(message.item)
        if not stored:
            return None
        assert ack is not None
        self._stream_seq = ack.seq
        self._position = outgoing[-1].position
        await self._pay_owed(js)
        return len(outgoing)

    async def _publish_each(self, js: JetStreamContext, outgoing: list[Outgoing]) -> int:
        """The slow path: one request per event, each expecting the sequence the acks so
        far leave, so that a duplicate (stored before, no new sequence) is passed over and
        a refusal answers at once. Advances over what was acked, then raises on a refusal.
        (From nats-server 2.12 the expected sequence is checked before duplicates: there a
        window the fast path stored in part is refused at once, and the relay resumes from
        the stream.)"""
        for i, message in enumerate(outgoing):
            try:
                ack = await js.publish(
                    message.subject,
                    message.payload,
                    timeout=ACK_TIMEOUT,
                    stream=self._stream,
                    headers=self._headers(message, 0, len(outgoing) - 1 - i),
                )
            except APIError as error:
                raise WindowFailed(f"position {message.position} refused: {error}") from error
            if ack.duplicate and not ack.seq:
                # A replicated stream on a 2.10 server answers so for an id it recorded
                # but did not store (a refused publish): no proof the event is there.
                raise WindowFailed(f"position {message.position}: a duplicate of nothing")
            if not ack.duplicate or ack.seq == self._stream_seq + 1:
                # A duplicate leaves the stream's last sequence as it is, unless it is the
                # very next one: the stream holds it right after what the relay expected.
                self._stream_seq = ack.seq
            self._position = message.position
            if message.item is not None:
                self._owe(message.item)
                await self._pay_owed(js)
        return len(outgoing)

    def _owe(self, item: WorkItemOwed) -> None:
        if item not in self._owed:
            self._owed.append(item)

    async def _publish_item(
        self, js: JetStreamContext, item: WorkItemOwed
    ) -> asyncio.Future[PubAck]:
        return await js.publish_async(
            item.subject,
            item.payload,
            stream=work_stream(self._stream),
            headers={"Nats-Msg-Id": item.msg_id},
        )

    def _work_item(self, tenant_id: str, run_id: str, version: int) -> WorkItemOwed:
        return WorkItemOwed(
            subject=work_subject(self._prefix, tenant_id, run_id),
            payload=msgspec.json.encode(WorkItem(run_id=run_id, tenant_id=tenant_id)),
            msg_id=f"run:{run_id}:{version}",
        )

    async def _pay_owed(self, js: JetStreamContext) -> None:
        """Publish the owed work items one by one, in order; raises WindowFailed (the
        rest still owed) on the first one the work stream does not ack."""
        while self._owed:
            item = self._owed[0]
            try:
                await js.publish(
                    item.subject,
                    item.payload,
                    timeout=ACK_TIMEOUT,
                    stream=work_stream(self._stream),
                    headers={"Nats-Msg-Id": item.msg_id},
                )
            except (NatsError, TimeoutError, OSError) as error:
                raise WindowFailed(
                    f"work item {item.msg_id} not acked ({len(self._owed)} owed): {error!r}"
                ) from error
            self._owed.pop(0)

    async def _resync(self, js: JetStreamContext) -> None:
        info = await js.stream_info(self._stream)
        last_position = await self._last_position(js, info)
        same_stream = (
            info.created == self._stream_created and info.state.last_seq >= self._stream_seq
        )
        # Our own acks stay true for the same stream (they may be ahead of its last
        # message if that was deleted); a recreated stream is trusted as it is.
        self._position = max(self._position, last_position) if same_stream else last_position
        self._stream_seq = info.state.last_seq
        self._stream_created = info.created
        self._synced = True
        log.info(
            "relay for %s resumes after position %d (stream sequence %d)",
            self._stream,
            self._position,
            self._stream_seq,
        )

    async def _last_position(self, js: JetStreamContext, info: StreamInfo) -> int:
        if info.state.messages == 0:
            return 0
        try:
            msg = await js.get_msg(self._stream, seq=info.state.last_seq)
        except NotFoundError:
            # The last sequence was deleted: take the last message our subjects still hold.
            try:
                msg = await js.get_msg(self._stream, subject=events_subjects(self._prefix))
            except NotFoundError:
                # Servers before 2.10 cannot look up the last message of a wildcard
                # subject: walk back from the end instead (deletions are rare).
                found = await self._last_message_before(js, info)
                if found is None:
                    return 0
                msg = found
        position = (msg.headers or {}).get(POSITION_HEADER)
        if position is None:
            raise PositionUnknown(
                f"message {msg.seq} of stream {self._stream} has no {POSITION_HEADER} header"
            )
        return int(position)

    async def _last_message_before(self, js: JetStreamContext, info: StreamInfo) -> Any:
        seq = info.state.last_seq - 1
        while seq >= max(info.state.first_seq, info.state.last_seq - 10_000):
            try:
                return await js.get_msg(self._stream, seq=seq)
            except NotFoundError:
                seq -= 1
        return None

    async def _lead(self) -> bool:
        """Whether this relay leads for this pass (LeadershipLost if it lost the lock)."""
        was_leader = self._lease.held
        if not await self._lease.hold():
            return False
        if not was_leader:
            self._synced = False  # another leader may have published meanwhile
            log.info("relay for %s is the leader", self._stream)
        return True

    async def _database(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(self._database_url, autocommit=True)
        return self._conn

    async def _jetstream(self) -> JetStreamContext:
        if self._nc is None or self._nc.is_closed or self._js is None:
            nc = await asyncio.wait_for(
                connect(self._nats_url, name=f"norn-relay-{self._stream}"),
                NATS_CONNECT_TIMEOUT,
            )
            try:
                js = nc.jetstream()
                await ensure_stream(js, self._stream, self._prefix)
                await ensure_work_streams(js, self._stream, self._prefix)
                # Other processes' appends poke (infrastructure/append_pokes.py): the
                # subscription is sent again by the client after a reconnect.
                await nc.subscribe(poke_subject(self._prefix), cb=self._poked)
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js = nc, js
            self._synced = False
        return self._js

    async def _drop_database(self) -> None:
        """Close the reader and give the lead up: a relay that cannot read the log lets
        another one (or itself, on its next pass) take over."""
        conn, self._conn = self._conn, None
        if self._lease.held:
            log.info("relay for %s gives up leadership", self._stream)
        await self._lease.release()
        self._synced = False
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _drop_nats(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._synced = False
        if nc is not None and not nc.is_closed:
            # Closing writes out what the client still buffers: the expected sequences
            # make anything stale among it refused.
            with contextlib.suppress(NatsError, TimeoutError, OSError):
                await asyncio.wait_for(nc.close(), NATS_CONNECT_TIMEOUT)
