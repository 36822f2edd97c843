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
DUPLICATE_WINDOW_SECONDS = 120.0


async def connect(url: str, name: str) -> Client:
    """A connection that keeps reconnecting forever: NATS being down must never stop
    a role, only delay it."""
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
    )


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
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created JetStream stream %s for %s", stream, config.subjects)
