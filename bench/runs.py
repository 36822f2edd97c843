"""Benchmark: runs per second, and trigger -> succeeded and trigger -> started latency
p50/p99, for a one-step pipeline (Input.file reading 10 records) at N concurrent
triggers.

    .venv/bin/python bench/runs.py [--seconds 20] [--clients 16] [--smoke]

Each client triggers a run (POST /pipelines/{id}/runs) and waits for it to finish before
the next one, so N runs are in flight at a time. The latency is the run's own: from its
RunQueued event to its RunSucceeded event (times from the event store, read back from the
read model), so the clients' polling does not inflate it. Same servers and `norn serve`
process as bench/commands.py (relay, projector and executor in one process, executor
concurrency = clients). For scale, Kestra's open-source edition publishes 250-1,500
executions a minute on 4 vCPUs."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime
from pathlib import Path

import httpx
from harness import editor_of_new_tenant, norn_server, percentile

PIPELINE = {
    "name": "bench-one-step",
    "steps": [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}],
}


async def run_clients(
    base: str, headers: dict[str, str], pipeline_id: str, clients: int, seconds: float
) -> tuple[list[float], list[float], int]:
    """(queued -> succeeded, queued -> started) latency of each run, and the failures."""
    latencies: list[float] = []
    starts: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def client() -> None:
            nonlocal failed
            while time.monotonic() < deadline:
                r = await c.post(f"/api/v1/pipelines/{pipeline_id}/runs", json={})
                if r.status_code != 202:
                    raise RuntimeError(f"trigger failed: {r.status_code} {r.text}")
                run = await finished(c, r.json()["run_id"])
                if run["status"] != "succeeded":
                    failed += 1
                    continue
                latencies.append(_seconds(run["finished_at"]) - _seconds(run["queued_at"]))
                starts.append(_seconds(run["started_at"]) - _seconds(run["queued_at"]))

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, starts, failed


async def finished(c: httpx.AsyncClient, run_id: str) -> dict:
    delay = 0.01
    while True:
        r = await c.get(f"/api/v1/runs/{run_id}")
        if r.status_code == 200 and r.json()["finished_at"] is not None:
            return r.json()
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


async def setup(base: str, data_dir: Path) -> tuple[dict[str, str], str]:
    tenant_id, headers = await editor_of_new_tenant(
        base,
        {
            "max_pipelines": 1000,
            "max_concurrent_runs": 10_000,
            "max_runs_per_day": 10_000_000,
        },
    )
    folder = data_dir / "files" / tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(10)))
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        r = await c.post("/api/v1/pipelines", json=PIPELINE)
        r.raise_for_status()
        return headers, r.json()["id"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="short run, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.seconds = 3.0
    env = {"NORN_EXECUTOR_CONCURRENCY": str(args.clients)}
    with norn_server(env) as server:
        headers, pipeline_id = asyncio.run(setup(server.base, server.data_dir))
        started = time.monotonic()
        latencies, starts, failed = asyncio.run(
            run_clients(server.base, headers, pipeline_id, args.clients, args.seconds)
        )
        elapsed = time.monotonic() - started
    if not latencies:
        raise SystemExit(f"no run succeeded ({failed} failed)")
    rate = len(latencies) / elapsed
    print(f"clients: {args.clients} concurrent triggers, {elapsed:.1f}s")
    print(
        f"runs: {rate:.1f}/s ({rate * 60:.0f} executions/minute), "
        f"{len(latencies)} succeeded, {failed} not"
    )
    print(
        f"trigger -> succeeded: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms"
    )
    print(
        f"trigger -> started: p50 {percentile(starts, 50) * 1000:.0f} ms, "
        f"p99 {percentile(starts, 99) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
