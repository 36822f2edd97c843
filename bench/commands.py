"""Benchmark: HTTP create-pipeline commands/s with p50/p99 latency at N concurrent
clients, the raw psycopg INSERT+COMMIT rate into the same database at the same
concurrency, their ratio, and projection lag (command accepted -> visible in the read
model) p50/p99.

    .venv/bin/python bench/commands.py [--seconds 10] [--clients 16] [--smoke]

Uses NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL if set (a fresh database is created
on that server), else embedded servers in a temporary directory. The API runs as a
separate `norn serve` process with every role, so the figures include the relay,
projector and executor sharing the machine, as on a one-machine install."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import uuid

import httpx
import psycopg
from harness import editor_of_new_tenant, norn_server, percentile


def body(i: int) -> dict:
    return {
        "name": f"bench-{uuid.uuid4().hex[:8]}-{i}",
        "tags": ["bench"],
        "steps": [
            {"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}},
            {
                "name": "write",
                "plugin": "Output.file",
                "config": {"path": "out.jsonl"},
                "depends_on": ["read"],
            },
        ],
    }


async def http_commands(base: str, headers: dict, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)

    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                r = await c.post("/api/v1/pipelines", json=body(w * 1_000_000 + i))
                if r.status_code != 201:
                    raise RuntimeError(f"create failed: {r.status_code} {r.text}")
                latencies.append(time.perf_counter() - started)
                i += 1

        await asyncio.gather(*(worker(w) for w in range(clients)))
    return latencies


def raw_inserts(database_url: str, clients: int, seconds: float) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, body bytea)")
    counts = [0] * clients
    payload = os.urandom(400)
    deadline = time.monotonic() + seconds

    def worker(w: int) -> None:
        with psycopg.connect(database_url) as conn:
            while time.monotonic() < deadline:
                conn.execute("INSERT INTO bench_raw (body) VALUES (%s)", (payload,))
                conn.commit()
                counts[w] += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def projection_lag(base: str, headers: dict, database_url: str, samples: int) -> list[float]:
    lags: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for i in range(samples):
                r = c.post("/api/v1/pipelines", json=body(i))
                accepted = time.perf_counter()
                position = r.json()["position"]
                while True:
                    row = conn.execute(
                        "SELECT position FROM projection_tracking WHERE name = 'pipelines'"
                    ).fetchone()
                    if row and row[0] >= position:
                        break
                    time.sleep(0.001)
                lags.append(time.perf_counter() - accepted)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--lag-samples", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="short run, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.lag_samples = 2.0, 20

    with norn_server() as server:
        # Far from its quota (creates skip the tenant's quota lock, see application/quotas.py).
        _, headers = asyncio.run(editor_of_new_tenant(server.base, {"max_pipelines": 10_000_000}))
        latencies = asyncio.run(http_commands(server.base, headers, args.clients, args.seconds))
        raw = raw_inserts(server.database_url, args.clients, args.seconds)
        lags = projection_lag(server.base, headers, server.database_url, args.lag_samples)

    http_rate = len(latencies) / args.seconds
    raw_rate = raw / args.seconds
    print(f"clients: {args.clients}, duration: {args.seconds:g}s per phase")
    print(
        f"HTTP create-pipeline: {http_rate:.0f} commands/s, "
        f"p50 {percentile(latencies, 50) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.1f} ms "
        f"({len(latencies)} commands)"
    )
    print(f"raw psycopg INSERT+COMMIT: {raw_rate:.0f} rows/s")
    print(f"ratio HTTP/raw: {http_rate / raw_rate:.2%}")
    print(
        f"projection lag (accepted -> in read model): p50 {percentile(lags, 50) * 1000:.1f} ms, "
        f"p99 {percentile(lags, 99) * 1000:.1f} ms, mean {statistics.mean(lags) * 1000:.1f} ms "
        f"({len(lags)} samples)"
    )


if __name__ == "__main__":
    main()
