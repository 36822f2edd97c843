"""Benchmark: one-step runs (Input.file reading 10 records) end to end, two ways, one line
each, with the `norn serve` process's CPU seconds (user+system, with its children;
psutil) per 1,000 runs.

    .venv/bin/python bench/runs.py [--seconds 20] [--clients 16] [--rate 50,100] [--apart]
                                   [--http-workers N] [--smoke]

--apart: each role in its own process instead of `norn serve` (CPU summed over them).
--http-workers N: `norn serve` with NORN_HTTP_WORKERS=N (its CPU includes the workers').

closed loop: each of N clients triggers a run (POST /pipelines/{id}/runs) and polls it
until it has finished before the next one, so N runs are in flight, and trigger ->
succeeded p50/p99. Its runs/s is a floor of the capacity, not the capacity: the clients'
polls (about five GETs a run) take CPU on the same cores, and a run's client waits for
its next poll. The open loop at 100/s is the capacity figure.
open loop: runs triggered at a fixed --rate per second for --seconds whatever the
earlier ones are doing (issue 9: 100 runs/s sustained, p99 at 50 runs/s; one phase per
rate, 50 and 100 by default), and nothing polled while they run (the
benchmark waits for them afterwards, checking twice a second): trigger -> succeeded
p50/p99 and the achieved rates (triggers accepted, runs finished). Beyond the capacity
runs queue and the latency grows with the length of the phase.

The latency is the run's own: from its RunQueued event to its RunSucceeded event (times
from the event store, read back from the read model), so the clients' polling does not
inflate it. Same servers and `norn serve` process as bench/commands.py (relay, projector
and executor in one process, executor concurrency = clients). For scale, Kestra's
open-source edition publishes 250-1,500 executions a minute on 4 vCPUs."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from harness import (
    ROLES_APART,
    editor_of_new_tenant,
    norn_server,
    open_loop,
    percentile,
    profiled,
    server_cpu_seconds,
)

STEPS = [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}]


async def run_clients(
    base: str, headers: dict[str, str], pipeline_id: str, clients: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
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

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, failed


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


@dataclass
class OpenRuns:
    latencies: list[float]
    not_succeeded: int
    unfinished: int
    failed_triggers: Counter[str]
    trigger_rate: float
    finish_rate: float
    runs: int


async def open_loop_runs(
    base: str,
    headers: dict[str, str],
    pipeline_id: str,
    rate: float,
    seconds: float,
    senders: int,
    drain_limit: float,
) -> OpenRuns:
    """Trigger at `rate`/s for `seconds` (up to `senders` requests at once), then wait
    until the runs have all finished, asking only whether any is still queued or running."""
    positions: list[int] = []
    accepted: list[float] = []  # time.monotonic() of each 202
    failed_triggers: Counter[str] = Counter()  # why: an HTTP status or an exception's class
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def send(_: int) -> None:
            try:
                r = await c.post(f"/api/v1/pipelines/{pipeline_id}/runs", json={})
            except httpx.HTTPError as error:
                failed_triggers[type(error).__name__] += 1
                return
            if r.status_code != 202:
                failed_triggers[str(r.status_code)] += 1
                return
            positions.append(r.json()["position"])
            accepted.append(time.monotonic())

        loop = await open_loop(rate, seconds, senders, send)
        if not positions:
            raise RuntimeError(f"open loop: no trigger accepted ({failed_triggers} failed)")
        # min_position: every triggered run is in the read model before "none queued".
        query = {"pipeline_id": pipeline_id, "limit": 1, "min_position": max(positions)}
        deadline = time.monotonic() + drain_limit
        while time.monotonic() < deadline:
            busy = False
            for status in ("queued", "running"):
                r = await c.get("/api/v1/runs", params={**query, "status": status})
                if r.status_code == 503:  # the read model is more than 5 s behind: ask again
                    busy = True
                    break
                r.raise_for_status()
                busy = busy or bool(r.json()["items"])
            if not busy:
                break
            await asyncio.sleep(0.5)
        runs = await all_runs(c, pipeline_id)

    finished = [r for r in runs if r["finished_at"] is not None]
    succeeded = [r for r in finished if r["status"] == "succeeded"]
    latencies = [_seconds(r["finished_at"]) - _seconds(r["queued_at"]) for r in succeeded]
    span = (
        max(_seconds(r["finished_at"]) for r in finished)
        - min(_seconds(r["queued_at"]) for r in finished)
        if finished
        else float("nan")
    )
    return OpenRuns(
        latencies=latencies,
        not_succeeded=len(finished) - len(succeeded),
        unfinished=len(runs) - len(finished),
        failed_triggers=failed_triggers,
        trigger_rate=len(accepted) / (max(accepted) - loop.started + 1 / rate),
        finish_rate=len(finished) / span,
        runs=len(runs),
    )


async def all_runs(c: httpx.AsyncClient, pipeline_id: str) -> list[dict]:
    runs: list[dict] = []
    cursor = None
    while True:
        params = {"pipeline_id": pipeline_id, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        r = await c.get("/api/v1/runs", params=params)
        r.raise_for_status()
        page = r.json()
        runs.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return runs


async def setup(base: str, data_dir: Path) -> dict[str, str]:
    """An editor's headers, and the file the pipelines read."""
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
    return headers


async def one_step_pipeline(base: str, headers: dict[str, str]) -> str:
    """A new one-step pipeline (one per phase, so each phase's runs are listed alone)."""
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        r = await c.post("/api/v1/pipelines", json={"name": name, "steps": STEPS})
        r.raise_for_status()
        return str(r.json()["id"])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=16, help="closed loop: runs in flight")
    parser.add_argument(
        "--rate",
        type=_rates,
        default=[50.0, 100.0],
        help="open loop: runs/s offered, one phase per rate (comma-separated)",
    )
    parser.add_argument("--senders", type=int, default=64, help="open loop: triggers at once")
    parser.add_argument(
        "--drain-limit", type=float, default=300.0, help="open loop: wait for its runs at most"
    )
    parser.add_argument(
        "--apart",
        action="store_true",
        help="each role in its own process (norn api, relay, ...) instead of norn serve",
    )
    parser.add_argument(
        "--http-workers", type=int, default=None, help="NORN_HTTP_WORKERS of norn serve"
    )
    parser.add_argument("--smoke", action="store_true", help="every phase, briefly, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.seconds = 2.0
    env = {"NORN_EXECUTOR_CONCURRENCY": str(args.clients)}
    if args.http_workers is not None:
        env["NORN_HTTP_WORKERS"] = str(args.http_workers)
    commands = ROLES_APART if args.apart else ("serve",)
    with norn_server(env, commands=commands) as server:
        headers = asyncio.run(setup(server.base, server.data_dir))
        closed_id = asyncio.run(one_step_pipeline(server.base, headers))
        cpu = server_cpu_seconds(server)
        started = time.monotonic()
        latencies, failed = asyncio.run(
            run_clients(server.base, headers, closed_id, args.clients, args.seconds)
        )
        elapsed = time.monotonic() - started
        closed_cpu = server_cpu_seconds(server) - cpu

        opens: list[tuple[float, OpenRuns, float]] = []
        for rate in args.rate:
            # Each phase on a pipeline of its own, after the last one's runs all finished.
            open_id = asyncio.run(one_step_pipeline(server.base, headers))
            cpu = server_cpu_seconds(server)
            with profiled(server.pid, f"runs-open-loop-{rate:g}", args.seconds):
                opened = asyncio.run(
                    open_loop_runs(
                        server.base,
                        headers,
                        open_id,
                        rate,
                        args.seconds,
                        args.senders,
                        args.drain_limit,
                    )
                )
            opens.append((rate, opened, server_cpu_seconds(server) - cpu))
    if not latencies or not all(opened.latencies for _, opened, _ in opens):
        raise SystemExit(f"no run succeeded ({failed} failed, open loops: {opens})")
    rate = len(latencies) / elapsed
    finished_closed = len(latencies) + failed
    print(
        f"closed loop, {args.clients} in flight, {elapsed:.1f} s: {rate:.1f} runs/s "
        f"({rate * 60:.0f}/minute), trigger -> succeeded p50 {ms(percentile(latencies, 50))}, "
        f"p99 {ms(percentile(latencies, 99))}, norn CPU "
        f"{closed_cpu / finished_closed * 1000:.1f} s/1k runs incl. polls "
        f"({len(latencies)} succeeded, {failed} not)"
    )
    for offered, opened, open_cpu in opens:
        print(open_loop_line(offered, opened, open_cpu, args.seconds, args.drain_limit))


def open_loop_line(
    offered: float, opened: OpenRuns, cpu: float, seconds: float, drain_limit: float
) -> str:
    problems = "".join(
        f", {n} {what}"
        for n, what in (
            (opened.not_succeeded, "not succeeded"),
            (opened.unfinished, f"unfinished after {drain_limit:g} s"),
        )
        if n
    )
    problems += "".join(
        f", {n} triggers failed: {why}" for why, n in opened.failed_triggers.most_common()
    )
    return (
        f"open loop, {offered:g} runs/s offered for {seconds:g} s: trigger -> succeeded "
        f"p50 {ms(percentile(opened.latencies, 50))}, p99 {ms(percentile(opened.latencies, 99))}"
        f", achieved {opened.trigger_rate:.1f} triggers/s, {opened.finish_rate:.1f} runs "
        f"finished/s, norn CPU {cpu / opened.runs * 1000:.1f} s/1k runs "
        f"({len(opened.latencies)} succeeded{problems})"
    )


def _rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("runs/s above 0, comma-separated")
    return rates


if __name__ == "__main__":
    main()
