"""Read-model positions shared with the processes that answer HTTP (docs/architecture.md §6,
"Read-your-writes").

A query's `min_position` waits until the read model has reached that position. The
leading projector runner knows at once (LivePositions), but only in its own process; an
API process elsewhere (every HTTP worker of `norn serve`, `norn api`) polled the tracking
row every 10-100 ms, and a position the projector passed with nothing to apply reaches
the row up to a second later (projections/positions.py). So after each batch the leading
runner publishes the positions that moved on the core NATS subject `<prefix>.positions`
(not a JetStream subject: nothing stores it), and every API process without a projector
takes them into its LivePositions, which wakes its waiters. A position published is true
(everything at or below it is applied and committed, or has no handler), so a waiter may
trust it; a lost message costs only latency, since waiters still poll the row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from projections.positions import LivePositions, PositionKeeper

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, int]).decode


def positions_subject(prefix: str) -> str:
    return f"{prefix}.positions"


class PositionBroadcast:
    """A runner's sender: the positions that moved since its last message, one message
    per call (a runner calls it once per batch)."""

    def __init__(self, prefix: str) -> None:
        self._subject = positions_subject(prefix)
        self._sent: dict[str, int] = {}

    async def send(self, nc: Client, keepers: Iterable[PositionKeeper]) -> None:
        moved = {
            k.projection.name: k.passed
            for k in keepers
            if k.passed > self._sent.get(k.projection.name, 0)
        }
        if not moved or not nc.is_connected:
            return
        await nc.publish(self._subject, _encode(moved))  # buffered: the flusher sends it
        self._sent.update(moved)


async def follow_positions(nc: Client, prefix: str, live: LivePositions) -> Subscription:
    """In a process without a projector: take every runner's positions into `live`."""

    async def take(msg: Msg) -> None:
        try:
            moved = _decode(msg.data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed message on %s", msg.subject)
            return
        for name, position in moved.items():
            live.publish(name, position)

    return await nc.subscribe(positions_subject(prefix), cb=take)
