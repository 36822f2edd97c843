"""NATS JetStream wiring: connection and the NORN_EVENTS stream."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

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


async def add_missing_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Add a stream that was found missing. The roles of `norn serve` start together and
    each makes sure of the streams it uses, so another may add it between the look and
    this add: JetStream takes an identical second add as a no-op, but two at the same
    moment can refuse one ("subjects overlap with an existing stream", which once left
    an executor without its work queue). A refused add is fine if the stream is there
    now; else the refusal stands."""
    try:
        await js.add_stream(config)
    except APIError as refused:
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            raise refused from None
        return
    if config.name not in _CREATED:  # once per process, however many roles added it
        _CREATED.add(config.name)
        log.info("created JetStream stream %s for %s", config.name, config.subjects)


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
        await add_missing_stream(js, config)
        return
    current = info.config
    if current.subjects != config.subjects or current.duplicate_window != config.duplicate_window:
        # Keep the stream's other settings (limits an operator tuned), fix ours.
        current.subjects = config.subjects
        current.duplicate_window = config.duplicate_window
        await js.update_stream(current)
        log.info("updated JetStream stream %s to %s", stream, config.subjects)
