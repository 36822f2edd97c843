"""Benchmark: the live feeds of issue 13, each figure on one line beside a reference
measured in the same run.

    .venv/bin/python bench/feeds.py [--clients 100] [--rate 200] [--seconds 10]
                                    [--behind 10000] [--smoke]

[1] SSE: --clients clients follow GET /api/v1/events/stream (types=pipeline created)
    while create-pipeline commands are offered at --rate/s (open loop) for --seconds;
    delivery latency p50/p99 over every (client, command) pair, from the moment the
    command was due (open loop: a send that waits for one of the 16 connections counts
    its wait) to the moment the client read its event, and how many arrived | the
    commands' own response time p50/p99 (from their sending) | norn CPU s/1k commands (and this
    benchmark process's own, which shares the machine).
[2] WebSocket: the same over GET /api/v1/ws, one subscription per client.
[3] Resume: a client `--behind` positions behind (after = the marker command's
    position - behind) connects and reads until the marker's event: time to live and
    events/s, over SSE (?after=) and over WebSocket (subscribe with after) | the same
    10 positions behind (what connecting and subscribing cost).

Latency is measured by the benchmark process, which parses every event of every client
(20,000 a second at the defaults): on a shared two-core machine it competes with norn
serve for CPU, so the figures are upper bounds. Uses NORN_BENCH_DATABASE_URL /
NORN_BENCH_NATS_URL if set, else embedded servers (bench/harness.py)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import psutil
from harness import (
    editor_of_new_tenant,
    norn_cpu_seconds,
    norn_server,
    open_loop,
    percentile,
    profiled,
)
from websockets.asyncio.client import connect

CREATED = "norn.pipeline.created.v1"
SENDERS = 16
NAME = re.compile(rb'"name":"feed-(\d+)-')
"""The command's number, in the event's definition (no JSON parse per event)."""


def body(name: str) -> dict:
    return {
        "name": name,
        "steps": [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}],
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds (its clients and load), without norn."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def p50_p99(values: list[float]) -> str:
    if not values:
        return "p50 - / p99 -"
    return f"p50 {ms(percentile(values, 50))} / p99 {ms(percentile(values, 99))}"


@dataclass
class Phase:
    """Send times by command number, and what the clients saw of them."""

    sent: dict[int, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    responses: list[float] = field(default_factory=list)

    def saw(self, text: bytes) -> None:
        match = NAME.search(text)
        if match is None:
            return
        sent = self.sent.get(int(match[1]))
        if sent is not None:
            self.latencies.append(time.monotonic() - sent)
            self.received += 1


async def sse_client(base: str, headers: dict, phase: Phase, ready: asyncio.Event) -> None:
    """A stream read off the socket: HTTP/1.1 by hand, and each message found by its
    blank line and searched once, bytes only. httpx's line iterator cost this process
    more CPU than norn spent sending (100 clients, 20,000 messages a second), and the
    two share the machine."""
    address = urlsplit(base)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    lines = [f"GET /api/v1/events/stream?types={CREATED} HTTP/1.1", f"Host: {address.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        await reader.readuntil(b"\r\n\r\n")  # the headers
        buffer = b""
        while data := await reader.read(65536):
            # The body is chunked; the chunks' size lines fall between messages, which
            # end with a blank line, and match nothing.
            *messages, buffer = (buffer + data).split(b"\r\n\r\n")
            for message in messages:
                if b"data:" in message:
                    phase.saw(message)
                elif b": connected" in message:
                    ready.set()
    finally:
        writer.close()


async def ws_client(url: str, headers: dict, phase: Phase, ready: asyncio.Event) -> None:
    """A WebSocket read off the socket, as `sse_client`: the handshake and the frames by
    hand (RFC 6455: the server's frames are not masked, ours are), a ping answered, each
    text frame searched once. The websockets library's client cost this process more CPU
    than norn spent sending, on the same two cores."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {address.path} HTTP/1.1", f"Host: {address.netloc}", "Upgrade: websocket"]
    lines += ["Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(opcode: int, payload: bytes) -> None:  # a client's frames are masked
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = len(payload)
        length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2)
        writer.write(bytes([0x80 | opcode]) + length + mask + masked)

    try:
        status = await reader.readline()
        if b" 101 " not in status:
            raise RuntimeError(f"WebSocket refused: {status!r}")
        await reader.readuntil(b"\r\n\r\n")
        subscribe = {"type": "subscribe", "id": 1, "types": [CREATED]}
        send(0x1, json.dumps(subscribe).encode())
        buffer, at = b"", 0
        while data := await reader.read(65536):
            buffer = buffer[at:] + data
            at = 0
            while len(buffer) - at >= 2:
                opcode, size = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
                head = 2
                if size == 126:
                    head, size = 4, int.from_bytes(buffer[at + 2 : at + 4])
                elif size == 127:
                    head, size = 10, int.from_bytes(buffer[at + 2 : at + 10])
                if len(buffer) - at < head + size:
                    break  # the rest of this frame is still on its way
                payload = buffer[at + head : at + head + size]
                at += head + size
                if opcode == 0x1:
                    if b'"type":"event"' in payload[:20]:
                        phase.saw(payload)
                    elif b'"type":"ack"' in payload:
                        ready.set()
                elif opcode == 0x9:
                    send(0xA, payload)
                elif opcode == 0x8:
                    return
    finally:
        writer.close()


Client = Callable[[Phase, asyncio.Event], Awaitable[None]]


async def delivery(
    base: str, headers: dict, client: Client, clients: int, rate: float, seconds: float
) -> tuple[Phase, int]:
    """Clients connected, then commands offered at `rate`; (what was seen, commands)."""
    phase = Phase()
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(client(phase, ready)) for ready in readies]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    # 16 connections: httpx's pool looks at every connection for every request it places
    # (has_expired, is_idle), so with 64 busy ones the benchmark's own CPU grew as the
    # server slowed, and took the CPU the server needed (bench profile, py-spy). Sends
    # beyond 16 wait in open_loop, and latency counts from each command's scheduled time,
    # so that wait is not hidden.
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:

        async def send(i: int) -> None:
            phase.sent[i] = began + i / rate  # scheduled: no coordinated omission
            started = time.monotonic()
            r = await c.post("/api/v1/pipelines", json=body(f"feed-{i}-{uuid.uuid4().hex[:6]}"))
            if r.status_code != 201:
                raise RuntimeError(f"create failed: {r.status_code} {r.text}")
            phase.responses.append(time.monotonic() - started)

        began = time.monotonic()
        run = await open_loop(rate, seconds, SENDERS, send)
    deadline = time.monotonic() + 20
    while phase.received < run.count * clients and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return phase, run.count


async def top_up(base: str, headers: dict, events: int) -> int:
    """Commands until the store holds `events` positions; the last one's position."""
    position = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        while position < events:
            made = await asyncio.gather(
                *(
                    c.post("/api/v1/pipelines", json=body(f"fill-{uuid.uuid4().hex}"))
                    for _ in range(16)
                )
            )
            position = max(r.json()["position"] for r in made)
    return position


async def resume(base: str, headers: dict, behind: int, over: str) -> tuple[float, int]:
    """(time to live, events read) of a client `behind` positions behind the marker."""
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        marker = (await c.post("/api/v1/pipelines", json=body(f"mark-{uuid.uuid4().hex}"))).json()
    after = max(0, marker["position"] - behind)
    seen = 0
    started = time.monotonic()
    if over == "sse":
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=None) as http,  # noqa: S113
            http.stream("GET", "/api/v1/events/stream", params={"after": after}) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    seen += 1
                    if marker["id"] in line and CREATED in line:
                        break
    else:
        url = base.replace("http://", "ws://") + "/api/v1/ws"
        async with connect(url, additional_headers=headers, proxy=None, max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "id": 1, "after": after}))
            async for frame in ws:
                text = str(frame)
                if '"type":"event"' in text:
                    seen += 1
                    if marker["id"] in text and CREATED in text:
                        break
    return time.monotonic() - started, seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="offered commands/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of [1] and [2]")
    parser.add_argument("--behind", type=int, default=10_000, help="positions behind in [3]")
    parser.add_argument("--smoke", action="store_true", help="every phase, briefly, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.rate, args.seconds, args.behind = 5, 20.0, 1.0, 300
    limits = f"free=5,pro=50,enterprise={args.clients + 10},platform=100"
    out: list[str] = []
    with norn_server({"NORN_STREAM_LIMITS": limits}) as server:
        base = server.base
        _, headers = asyncio.run(editor_of_new_tenant(base, {"max_pipelines": 10_000_000}))
        url = base.replace("http://", "ws://") + "/api/v1/ws"
        kinds: dict[str, Client] = {
            "SSE": lambda phase, ready: sse_client(base, headers, phase, ready),
            "WebSocket": lambda phase, ready: ws_client(url, headers, phase, ready),
        }
        for n, (label, client) in enumerate(kinds.items(), start=1):
            print(f"[{n}] {label}...", file=sys.stderr, flush=True)
            cpu, own = norn_cpu_seconds(server.pid), own_cpu_seconds()
            with profiled(server.pid, label.lower(), args.seconds):
                phase, commands = asyncio.run(
                    delivery(base, headers, client, args.clients, args.rate, args.seconds)
                )
            cpu, own = norn_cpu_seconds(server.pid) - cpu, own_cpu_seconds() - own
            expected = commands * args.clients
            out.append(
                f"[{n}] command -> {label} delivery, {args.clients} clients at {args.rate:g}/s "
                f"for {args.seconds:g} s: {p50_p99(phase.latencies)} "
                f"({phase.received}/{expected} delivered) | command response "
                f"{p50_p99(phase.responses)} | norn CPU {cpu / commands * 1000:.1f} s/1k commands"
                f" (this benchmark's own: {own / commands * 1000:.1f})"
            )
        print("[3] resume...", file=sys.stderr, flush=True)
        asyncio.run(top_up(base, headers, args.behind + 100))
        for label in ("sse", "ws"):
            took, seen = asyncio.run(resume(base, headers, args.behind, label))
            # The marker's append is a few events (the pipeline, its name, its quota).
            near, _ = asyncio.run(resume(base, headers, 10, label))
            out.append(
                f"[3] resume over {label}, {args.behind} positions behind: live after {ms(took)} "
                f"({seen} events, {seen / took:.0f}/s) | 10 positions behind: {ms(near)}"
            )
    print("\n".join(out))


if __name__ == "__main__":
    main()
