"""Pokes: an append in one process wakes the relay running in another at once
(docs/architecture.md §4, "Wake-ups").

The event store does not NOTIFY (infrastructure/recorder.py: a NOTIFY serialises
commits), so a relay learns of other processes' appends by polling. With the roles in
their own processes (`norn api`, `norn scheduler`, `norn executor`, ...) that put an
average of half a poll interval between a command's commit and its event on NATS, on
every hop of a run. Instead, after each append a process that does not hold the relay's
lead itself publishes an empty message on the core NATS subject `<prefix>.appended`
(not a JetStream subject: nothing stores it), and the relay, subscribed to it, looks at
once. A poke carries nothing: the relay reads the store as always, so a lost poke (NATS
down, a process that has no NATS, such as a one-shot CLI command) costs only latency,
up to the relay's poll interval.

Pokes are coalesced: however many appends a process makes while one poke waits to be
sent, one is sent; and one waits until POKE_GAP has passed since the last was sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from nats.aio.client import Client
from nats.errors import Error as NatsError

from infrastructure.nats import connect
from infrastructure.supervision import Backoff, retry

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
POKE_GAP = 0.010
"""Seconds at least between two pokes of one process. After a quiet spell a poke goes at
once; under load the appends of a gap share one, and the relay reads them in one pass.
An HTTP worker creating 450 pipelines a second sent as many pokes, which took about 7% of
its CPU, and each woke the relay for a read (a committed transaction) of its own. 10 ms,
not 5: fewer, larger relay reads and projector batches kept the read models closer under
load (p99 lag at 500 creates/s 37-42 ms against 69-93), for a client sending one command
at a time a lag of about the gap (docs/architecture.md §4, "Wake-ups")."""


def poke_subject(prefix: str) -> str:
    return f"{prefix}.appended"


class AppendPokes:
    """Sends pokes over a NATS connection of its own, made in the background by `run`
    (an append never waits for NATS; until connected, pokes are dropped)."""

    def __init__(self, nats_url: str, prefix: str) -> None:
        self._nats_url = nats_url
        self._subject = poke_subject(prefix)
        self._nc: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._last_sent = float("-inf")  # the loop's time
        self._lock = threading.Lock()
        self._sending: set[asyncio.Task[None]] = set()
        self.sent = 0
        """Pokes sent (not counting those coalesced into one)."""

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retried with backoff while NATS is away), then stay until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._nc = await retry(
            "append pokes: connecting to NATS",
            lambda: asyncio.wait_for(connect(self._nats_url, name="norn-pokes"), CONNECT_TIMEOUT),
            backoff=Backoff(first=1.0, cap=5.0),
            quiet=(Exception,),  # an outage: the relay's poll covers for it meanwhile
            logger=log,
            stop=stop,
        )
        try:
            await stop.wait()
        finally:
            nc, self._nc = self._nc, None
            if nc is not None and not nc.is_closed:
                try:
                    await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT)
                except (NatsError, TimeoutError, OSError):
                    pass

    def poke(self) -> None:
        """Tell the relay to look (from any thread; never blocks)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            if self._pending:
                return  # the one waiting to be sent covers this append too
            self._pending = True
        try:
            loop.call_soon_threadsafe(self._due)
        except RuntimeError:  # the loop closed meanwhile
            self._pending = False

    def _due(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_sent + POKE_GAP - loop.time()
        if wait > 0:
            loop.call_later(wait, self._send)  # still pending: later appends join it
        else:
            self._send()

    def _send(self) -> None:
        with self._lock:
            self._pending = False
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        task = loop.create_task(self._publish(nc))
        self._sending.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._sending.discard)

    async def _publish(self, nc: Client) -> None:
        try:
            await nc.publish(self._subject, b"")
            self.sent += 1
        except (NatsError, OSError) as error:
            log.debug("append poke not sent: %r", error)
