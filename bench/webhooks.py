"""Benchmark: webhook deliveries to a local receiver (issue 13: deliveries/s).

    .venv/bin/python bench/webhooks.py [--events 2000] [--live 200] [--clients 16] [--smoke]

Processes: `norn api`, `norn relay`, `norn projector` with NORN_ALLOW_PRIVATE_NETWORKS=1
(the receiver is on 127.0.0.1), then one `norn notifier`. One tenant, one webhook on
`norn.pipeline.*`, a receiver in this process answering 200 at once. Prints:

[1] backlog: --events pipelines created over HTTP (--clients at once) while no notifier
    runs, then the notifier started: deliveries/s from the first delivery received to
    the last (fan-out and delivery together), and from the process's start (a cold start
    included), and whether each event arrived exactly once.
[2] live: --live more pipelines created one by one (the notifier running): latency from
    the event's time (its CloudEvent `time`) to its receipt, p50 / p99 / max.

--smoke: 200 and 50, for CI (figures printed, never asserted). Uses
NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL like the other benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime

import httpx
import msgspec
from harness import (
    ADMIN,
    PASSWORD,
    Server,
    editor_of_new_tenant,
    norn_process,
    norn_server,
    percentile,
)

STEPS = [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}]


class Receiver:
    """Answers every POST 200 and notes (receipt time, delivery id, event id, time)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str, str, str]] = []
        self.url = ""
        self.arrived = asyncio.Event()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
                body = await reader.readexactly(length)
                delivery = head.split("x-norn-delivery:", 1)[1].split("\r\n", 1)[0].strip()
                event = msgspec.json.decode(body)
                self.got.append((time.time(), delivery, event["id"], event["time"]))
                self.arrived.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the notifier hung up, or the benchmark is over
        finally:
            writer.close()

    async def wait_for(self, count: int, limit: float) -> None:
        deadline = time.monotonic() + limit
        while len({g[2] for g in self.got}) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(self.got)} of {count} deliveries in {limit:g} s")
            await asyncio.sleep(0.01)


async def create_pipelines(base: str, headers: dict, names: list[str], clients: int) -> None:
    queue = list(names)

    async def client(c: httpx.AsyncClient) -> None:
        while queue:
            name = queue.pop()
            r = await c.post("/api/v1/pipelines", json={"name": name, "steps": STEPS})
            assert r.status_code == 201, r.text

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))


async def bench(server: Server, args: argparse.Namespace) -> None:
    receiver = Receiver()
    listening = await receiver.start()
    total = args.events + args.live + 10
    tenant_id, editor = await editor_of_new_tenant(server.base, {"max_pipelines": total})
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as c:
        r = await c.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
        root = {"Authorization": f"Bearer {r.json()['access_token']}", "X-Tenant-ID": tenant_id}
        body = {"url": receiver.url, "events": ["norn.pipeline.*"]}
        created = await c.post("/api/v1/webhooks", json=body, headers=root)
        assert created.status_code == 201, created.text

    names = [f"p{i}" for i in range(args.events)]
    started = time.monotonic()
    await create_pipelines(server.base, editor, names, args.clients)
    print(f"[1] {args.events} events appended in {time.monotonic() - started:.1f} s")
    with norn_process(server, "notifier"):
        began = time.monotonic()
        await receiver.wait_for(args.events, 300)
        drained = time.monotonic() - began
        events = {g[2] for g in receiver.got}
        deliveries = {g[1] for g in receiver.got}
        flowing = receiver.got[-1][0] - receiver.got[0][0]
        print(
            f"    backlog: {(len(receiver.got) - 1) / flowing:.0f} deliveries/s from the first"
            f" to the last; {args.events / drained:.0f}/s counting the notifier's start"
            f" ({drained:.2f} s); {len(receiver.got)} received, {len(events)} events,"
            f" {len(deliveries)} delivery ids"
        )
        latencies = []
        async with httpx.AsyncClient(base_url=server.base, headers=editor, timeout=30) as c:
            for i in range(args.live):
                receiver.arrived.clear()
                r = await c.post("/api/v1/pipelines", json={"name": f"l{i}", "steps": STEPS})
                assert r.status_code == 201, r.text
                await asyncio.wait_for(receiver.arrived.wait(), 30)
                at, _, _, when = receiver.got[-1]
                latencies.append(at - datetime.fromisoformat(when).timestamp())
        ms = [1000 * x for x in latencies]
        print(
            f"[2] live: {args.live} events, event -> received p50 {percentile(ms, 50):.0f} ms"
            f", p99 {percentile(ms, 99):.0f} ms, max {max(ms):.0f} ms"
        )
    listening.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.live = 200, 50
    env = {"NORN_ALLOW_PRIVATE_NETWORKS": "1"}
    with norn_server(env, commands=("api", "relay", "projector")) as server:
        asyncio.run(bench(server, args))


if __name__ == "__main__":
    main()
