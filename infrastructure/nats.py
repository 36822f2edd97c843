"""NATS JetStream wiring: connection and the NORN_EVENTS stream."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

POSITION_HEADER = "Norn-Position"
"""Carries the global position of the event in every published message, so the relay
can resume from the last message in the stream after a crash."""
FOLLOWING_HEADER = "Norn-Following"
"""On every message of a relay window but its last: how many more of the window follow
(published together, so stored within moments). A projection runner that has taken one
waits briefly for them, so that a command's events are applied in one batch
(docs/architecture.md §6)."""
DUPLICATE_WINDOW_SECONDS = 120.0


async def connect(url: str, name: str) -> Client:
    """A connection that, once made, reconnects forever: NATS being down must never stop
    a role, only delay it. The first connect also retries forever, so callers bound it
    (asyncio.wait_for) to report the outage and stay stoppable."""

    async def quiet(error: Exception) -> None:
        # nats-py's default logs a traceback at ERROR on every attempt (2/s while NATS
        # is down); callers report the outage once themselves.
        log.debug("NATS connection %s: %r", name, error)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
        error_cb=quiet,
    )


_CREATED: set[str] = set()


def say_created(stream: str, subjects: list[str] | None) -> None:
    """Log a stream's creation once per process. The roles of `norn serve` start
    together and each makes sure of the streams it uses: two may both find a stream
    missing and both add it (JetStream takes an identical second add as a no-op), and
    the log said "created" twice."""
    if stream not in _CREATED:
        _CREATED.add(stream)
        log.info("created JetStream stream %s for %s", stream, subjects)


def events_subjects(prefix: str) -> str:
    return f"{prefix}.events.>"


async def ensure_stream(js: JetStreamContext, stream: str, prefix: str) -> None:
    config = StreamConfig(
        name=stream,
        subjects=[events_subjects(prefix)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(config)
        say_created(stream, config.subjects)
        return
    current = info.config
    if current.subjects != config.subjects or current.duplicate_window != config.duplicate_window:
        # Keep the stream's other settings (limits an operator tuned), fix ours.
        current.subjects = config.subjects
        current.duplicate_window = config.duplicate_window
        await js.update_stream(current)
        log.info("updated JetStream stream %s to %s", stream, config.subjects)
