"""A WebSocket client of the feed (GET /api/v1/ws) for tests over a real uvicorn
(api_client.serving_app), on the `websockets` library."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


def ws_url(http: httpx.AsyncClient, query: str = "") -> str:
    base = str(http.base_url).rstrip("/").replace("http://", "ws://", 1)
    return f"{base}/api/v1/ws{'?' + query if query else ''}"


class Ws:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.seen: list[Frame] = []

    async def send(self, **message: Any) -> None:
        await self.conn.send(json.dumps(message))

    async def next(self, seconds: float = 20.0) -> Frame:
        frame = json.loads(await asyncio.wait_for(self.conn.recv(), seconds))
        self.seen.append(frame)
        return frame

    async def until(self, done: Callable[[Frame], bool], seconds: float = 20.0) -> list[Frame]:
        """Every frame up to and including the first for which done() is true."""
        start = len(self.seen)
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching frame within {seconds}s: {self.seen[start:]}")
            if done(await self.next(left)):
                return self.seen[start:]

    async def answer(self, seconds: float = 10.0, **message: Any) -> Frame:
        """Send `message` and return the next frame that is not an event."""
        await self.send(**message)
        frames = await self.until(lambda f: f["type"] != "event", seconds)
        return frames[-1]

    async def closed(self, seconds: float = 2.5) -> tuple[int | None, str, list[Frame]]:
        """Read until the server closes: (close code, reason, frames read meanwhile)."""
        start = len(self.seen)
        deadline = asyncio.get_running_loop().time() + seconds
        with contextlib.suppress(ConnectionClosed):
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise AssertionError(f"still open after {seconds}s: {self.seen[start:]}")
                await self.next(left)
        return self.conn.close_code, self.conn.close_reason or "", self.seen[start:]


def events_of(frames: list[Frame], subscription: Any = None) -> list[Frame]:
    """The CloudEvents of `frames` (of one subscription, if given), in order."""
    return [
        f["event"]
        for f in frames
        if f["type"] == "event" and (subscription is None or f["subscription"] == subscription)
    ]


@contextlib.asynccontextmanager
async def raw_socket(
    http: httpx.AsyncClient, headers: dict[str, str] | None = None, query: str = "", **options: Any
) -> AsyncIterator[Ws]:
    """A connection as the handshake leaves it (nothing read yet)."""
    async with connect(
        ws_url(http, query), additional_headers=headers or {}, proxy=None, **options
    ) as conn:
        yield Ws(conn)


@contextlib.asynccontextmanager
async def feed_socket(
    http: httpx.AsyncClient, headers: dict[str, str] | None = None, query: str = "", **options: Any
) -> AsyncIterator[Ws]:
    """An authenticated connection (its `ready` frame read)."""
    async with raw_socket(http, headers, query, **options) as ws:
        ready = await ws.next()
        assert ready["type"] == "ready", ready
        yield ws


async def subscribed(ws: Ws, ident: Any, **fields: Any) -> None:
    """Subscribe and wait for the ack (the subscription is live from then on)."""
    ack = await ws.answer(type="subscribe", id=ident, **fields)
    assert ack == {"type": "ack", "id": ident}, ack
