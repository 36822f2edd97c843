"""The relay: follows the event store's notification log (the outbox) and publishes each
event, in order, as a CloudEvents envelope to JetStream.

- Resumes from the last message in the stream (its Norn-Position header), so a crash
  never loses or skips an event; a re-published one is dropped by the Nats-Msg-Id
  duplicate window.
- Publishes asynchronously in windows and advances only on acks.
- One leader at a time (a Postgres advisory lock); others stand by.
- Wakes on LISTEN norn_events, with a poll as the fallback, so a dead listener delays
  but never stalls it. NATS being down only delays publishing: commands keep appending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from nats.aio.client import Client
from nats.js import JetStreamContext

from infrastructure import envelope
from infrastructure.nats import POSITION_HEADER, connect, ensure_stream
from infrastructure.notification_log import NOTIFY_CHANNEL, read_notifications

log = logging.getLogger(__name__)
_LEADER_LOCK = 0x4E52454C  # "NREL"
WINDOW = 256


class Relay:
    def __init__(
        self,
        *,
        database_url: str,
        nats_url: str,
        stream: str,
        subject_prefix: str,
        batch_size: int = 500,
        poll_interval: float = 0.5,
    ) -> None:
        self._database_url = database_url
        self._nats_url = nats_url
        self._stream = stream
        self._prefix = subject_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._wake = asyncio.Event()
        self.published_position = 0
        self._synced = False

    def wake(self) -> None:
        self._wake.set()

    async def publish_pending(self) -> int:
        """One pass: publish every event after the stream's last one. Returns the count."""
        js = await self._jetstream()
        if not self._synced:
            self.published_position = await self._last_published(js)
            self._synced = True
        total = 0
        async with await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True
        ) as conn:
            while True:
                batch = await read_notifications(conn, self.published_position, self._batch_size)
                if not batch:
                    return total
                for start in range(0, len(batch), WINDOW):
                    await self._publish_window(js, batch[start : start + WINDOW])
                total += len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: hold the leader lock, then publish as events arrive."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._database_url, autocommit=True
                ) as lock_conn:
                    cur = await lock_conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,)
                    )
                    row = await cur.fetchone()
                    if not (row and row[0]):
                        await _sleep_or_stop(stop, 1.0)  # another relay leads: stand by
                        continue
                    await self._lead(stop)
            except (psycopg.OperationalError, OSError) as error:
                log.warning("relay: database unavailable (%s); retrying", error)
                await _sleep_or_stop(stop, 1.0)
        await self.close()

    async def _lead(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True
        ) as listen_conn:
            await listen_conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            listener = asyncio.create_task(self._listen(listen_conn))
            try:
                while not stop.is_set():
                    try:
                        await self.publish_pending()
                    except Exception as error:
                        log.warning("relay: publishing paused (%s); will resync", error)
                        self._synced = False
                        await _sleep_or_stop(stop, 1.0)
                        continue
                    if listener.done():  # a dead listener must not stall us: restart it
                        return
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            _first(self._wake.wait(), stop.wait()), timeout=self._poll_interval
                        )
            finally:
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        async for _ in conn.notifies():
            self._wake.set()

    async def _publish_window(self, js: JetStreamContext, window: list) -> None:
        futures = []
        for notification in window:
            event = envelope.to_cloud_event(notification)
            futures.append(
                await js.publish_async(
                    envelope.subject_for(self._prefix, event),
                    envelope.encode(event),
                    headers={"Nats-Msg-Id": event.id, POSITION_HEADER: str(event.position)},
                )
            )
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        self.published_position = window[-1].id

    async def _jetstream(self) -> JetStreamContext:
        if self._js is None or self._nc is None or self._nc.is_closed:
            self._nc = await connect(self._nats_url, name="norn-relay")
            self._js = self._nc.jetstream()
            await ensure_stream(self._js, self._stream, self._prefix)
        return self._js

    async def _last_published(self, js: JetStreamContext) -> int:
        info = await js.stream_info(self._stream)
        if not info.state.last_seq:
            return 0
        message = await js.get_msg(self._stream, seq=info.state.last_seq)
        return int((message.headers or {}).get(POSITION_HEADER, 0))

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._js = None
        self._synced = False


async def _first(*awaitables) -> None:  # type: ignore[no-untyped-def]
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
