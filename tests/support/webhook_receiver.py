"""A tiny HTTP/1.1 server on 127.0.0.1 standing in for a webhook receiver: it records
every request and answers each with the status `answer` gives (500 for the first
`fail_first`, then 200, by default). Keep-alive, Content-Length bodies only: what
httpx sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict:
        return msgspec.json.decode(self.body)


@dataclass
class Receiver:
    fail_first: int = 0
    answer: Callable[[int], int] | None = None
    delay: float = 0.0
    """Seconds before each answer (a slow receiver)."""
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def status_for(self, index: int) -> int:
        if self.answer is not None:
            return self.answer(index)
        return 500 if index < self.fail_first else 200

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for(self, check: Callable[[], bool], seconds: float = 20.0) -> None:
        async with asyncio.timeout(seconds):
            while not check():
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self.arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.status_for(len(self.requests))
                self.requests.append(Received(headers, body, status))
                self.arrived.set()
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the notifier hung up (or gave up waiting), or the test is over
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiver(
    fail_first: int = 0, answer: Callable[[int], int] | None = None, delay: float = 0.0
) -> AsyncIterator[Receiver]:
    made = Receiver(fail_first=fail_first, answer=answer, delay=delay)
    server = await asyncio.start_server(made._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    made.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield made
    finally:
        server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await server.wait_closed()
