"""Benchmark: the scheduler (issue: 10,000 jobs each firing every minute, two schedulers).

    .venv/bin/python bench/scheduler.py [--jobs 10000] [--minutes 2] [--schedulers 2]
                                        [--clients 16] [--smoke]

Processes: `norn api`, `norn relay` and `norn projector` (no executor: the runs stay
queued, so the scheduler is what is measured), and --schedulers `norn scheduler`
processes started once every job exists. One tenant, its quotas raised (max_jobs, runs a
day), one pipeline, --jobs enabled jobs on it: cron `* * * * *` (every minute, all due
at second 0), overlap `allow` (their earlier runs are still queued), no jitter. Prints:

[1] jobs created over HTTP at --clients at once: how many a second, and how long.
[2] start -> first fire: the schedulers are started 1 s after the first minute every job
    is due at (so something is due from the start), and this is the time from their
    start to the first run queued, and to the last of that minute's runs (every job's
    first fire: new rows in job_schedules, a full first pass).
[3] steady state over --minutes whole minutes after that first one: fire delay (a run's
    RunQueued time minus its scheduled time; jitter is 0, so nothing to exclude) p50,
    p99 and max (target p99 <= 1 s) with how many were late (> 1 s); duplicates (runs of
    one job for one scheduled time beyond the first: target 0); missed (a job's scheduled
    time in the window with no run: target 0); fires per minute achieved against the
    jobs (expected), as a ratio; the CPU seconds (user+system, psutil) of the scheduler
    processes per 1,000 fires, and of api+relay+projector beside them, over the window
    (idle passes between the bursts included); job_schedules' own counters, over the
    window and before it (a job made more than a minute before the schedulers started
    has a time then that was past the 60 s misfire grace: counted missed, by policy).

A RunQueued time is the event's timestamp, taken when the scheduler's append of the run
begins (the commit follows within the append); the delay is also printed by the
database's own clock (norn_events.recorded_at, the start of the append's transaction),
which the scheduler does not set. Everything is read back from
the database once the runs read model has every run. --smoke: 100 jobs firing every
second (cron `* * * * * *`), 10 seconds measured, for CI (figures printed, never
asserted). Uses NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL like the other benchmarks
(bench/harness.py); with NORN_BENCH_PROFILE=<dir>, py-spy samples the first scheduler
over the window into <dir>/scheduler.txt (bench/hotspots.py sorts it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from harness import (
    Server,
    editor_of_new_tenant,
    norn_cpu_seconds,
    norn_process,
    norn_server,
    percentile,
    profiled,
)

STEPS = [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}]
GRACE = 60.0  # the scheduler's misfire grace: a burst longer than this misses fires
COUNTERS = ("fired", "missed", "skipped", "refused", "late")


@dataclass(frozen=True)
class Cadence:
    cron: str
    period: timedelta

    def next_boundary(self, after: datetime) -> datetime:
        """The first scheduled time strictly after `after`."""
        step = self.period.total_seconds()
        seconds = after.timestamp()
        return datetime.fromtimestamp((seconds // step + 1) * step, UTC)


MINUTELY = Cadence("* * * * *", timedelta(minutes=1))
SECONDLY = Cadence("* * * * * *", timedelta(seconds=1))


async def create_jobs(
    base: str, headers: dict[str, str], pipeline_id: str, cadence: Cadence, jobs: int, clients: int
) -> tuple[float, int]:
    """`jobs` jobs made by `clients` concurrent closed-loop clients: (seconds taken, the
    highest position answered)."""
    next_index = 0
    highest = 0
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def client() -> None:
            nonlocal next_index, highest
            while next_index < jobs:
                i = next_index
                next_index += 1
                body = {
                    "name": f"bench-{i}",
                    "target": {"pipeline_id": pipeline_id},
                    "cron_expr": cadence.cron,
                    "overlap_policy": "allow",
                }
                r = await c.post("/api/v1/scheduler/jobs", json=body)
                if r.status_code != 201:
                    raise RuntimeError(f"job create failed: {r.status_code} {r.text}")
                highest = max(highest, r.json()["position"])

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.monotonic() - started, highest


async def setup(base: str, jobs: int) -> tuple[dict[str, str], str]:
    _, headers = await editor_of_new_tenant(
        base, {"max_jobs": jobs, "max_pipelines": 10, "max_runs_per_day": 10_000_000}
    )
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        r = await c.post("/api/v1/pipelines", json={"name": "bench-scheduled", "steps": STEPS})
        r.raise_for_status()
        return headers, r.json()["id"]


def wait_projected(conn: psycopg.Connection, projection: str, position: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    query = "SELECT position FROM projection_tracking WHERE name = %s"
    while time.monotonic() < deadline:
        row = conn.execute(query, (projection,)).fetchone()
        if row is not None and row[0] >= position:
            return
        time.sleep(0.2)
    raise RuntimeError(f"projection {projection} not at {position} after {limit:g} s")


def wait_fired(conn: psycopg.Connection, scheduled: datetime, jobs: int, limit: float) -> bool:
    """Until every job's bookkeeping shows a fire at `scheduled` or later (False after
    `limit` seconds)."""
    deadline = time.monotonic() + limit
    query = "SELECT count(*) FROM job_schedules WHERE last_run >= %s"
    while time.monotonic() < deadline:
        row = conn.execute(query, (scheduled,)).fetchone()
        if row is not None and row[0] >= jobs:
            return True
        time.sleep(0.2)
    return False


def counters(conn: psycopg.Connection) -> dict[str, int]:
    """job_schedules' counters summed over the jobs."""
    sums = ", ".join(f"coalesce(sum({name}), 0)" for name in COUNTERS)
    row = conn.execute(f"SELECT {sums} FROM job_schedules").fetchone()
    return dict(zip(COUNTERS, map(int, row or (0,) * len(COUNTERS)), strict=True))


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


@dataclass
class Measured:
    create_seconds: float
    start: datetime
    first_boundary: datetime
    window: tuple[datetime, datetime]  # the first and last scheduled time measured
    scheduler_cpu: float
    others_cpu: float
    complete: bool  # every job's last scheduled time fired before the wait's limit
    before: dict[str, int]  # job_schedules' counters when the window started
    after: dict[str, int]  # and when it ended


def run_bench(server: Server, args: argparse.Namespace, cadence: Cadence) -> Measured:
    headers, pipeline_id = asyncio.run(setup(server.base, args.jobs))
    create_seconds, highest = asyncio.run(
        create_jobs(server.base, headers, pipeline_id, cadence, args.jobs, args.clients)
    )
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        wait_projected(conn, "jobs", highest, 120)
        first = cadence.next_boundary(datetime.now(UTC))  # every job exists before it
        sleep_until(first + timedelta(seconds=1))
        start = datetime.now(UTC)
        with contextlib.ExitStack() as stack:
            schedulers = [
                stack.enter_context(norn_process(server, "scheduler"))
                for _ in range(args.schedulers)
            ]
            limit = GRACE + 30
            wait_fired(conn, first, args.jobs, limit)
            # The window: whole periods after the first burst is over.
            window_start = cadence.next_boundary(datetime.now(UTC))
            window_end = window_start + cadence.period * (args.periods - 1)
            sleep_until(window_start - min(cadence.period / 4, timedelta(seconds=1)))
            before = counters(conn)
            cpu = [norn_cpu_seconds(p.pid) for p in schedulers]
            other = [norn_cpu_seconds(pid) for pid in server.pids]
            span = (window_end - datetime.now(UTC)).total_seconds() + 30
            with profiled(schedulers[0].pid, "scheduler", span):
                sleep_until(window_end)
                complete = wait_fired(conn, window_end, args.jobs, limit)
                scheduler_cpu = sum(norn_cpu_seconds(p.pid) for p in schedulers) - sum(cpu)
                others_cpu = sum(norn_cpu_seconds(pid) for pid in server.pids) - sum(other)
                after = counters(conn)
        head = conn.execute("SELECT max(notification_id) FROM norn_events").fetchone()
        wait_projected(conn, "runs", head[0] if head else 0, 300)
    return Measured(
        create_seconds=create_seconds,
        start=start,
        first_boundary=first,
        window=(window_start, window_end),
        scheduler_cpu=scheduler_cpu,
        others_cpu=others_cpu,
        complete=complete,
        before=before,
        after=after,
    )


def report(server: Server, args: argparse.Namespace, cadence: Cadence, m: Measured) -> None:
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        runs = conn.execute(
            "SELECT trigger_id, scheduled_for, queued_at FROM runs WHERE trigger_kind = 'job'"
        ).fetchall()
        recorded = conn.execute(
            "SELECT r.scheduled_for, e.recorded_at FROM runs r JOIN norn_events e"
            " ON e.originator_id = r.id AND e.originator_version = 1"
            " WHERE r.trigger_kind = 'job' AND r.scheduled_for BETWEEN %s AND %s",
            m.window,
        ).fetchall()
        job_ids = [row[0] for row in conn.execute("SELECT id::text FROM jobs").fetchall()]
    print(
        f"[1] {args.jobs} jobs created in {m.create_seconds:.1f} s "
        f"({args.jobs / m.create_seconds:.0f}/s, {args.clients} clients)"
    )
    first_runs = sorted(queued for _, at, queued in runs if at == m.first_boundary)
    if first_runs:
        print(
            f"[2] {args.schedulers} schedulers started "
            f"{(m.start - m.first_boundary).total_seconds():.1f} s after "
            f"{args.jobs} jobs fell due: first fire "
            f"{(first_runs[0] - m.start).total_seconds():.2f} s after start, the last of "
            f"those {len(first_runs)} fires {(first_runs[-1] - m.start).total_seconds():.2f} s "
            f"after start"
        )
    else:
        print(f"[2] no fire for {m.first_boundary} at all")

    low, high = m.window
    measured = [(job, at, queued) for job, at, queued in runs if low <= at <= high]
    periods = round((high - low) / cadence.period) + 1
    expected = args.jobs * periods
    per_key = Counter((job, at) for job, at, _ in measured)
    duplicates = sum(n - 1 for n in per_key.values())
    times = [low + cadence.period * k for k in range(periods)]
    missed = sum(1 for job in job_ids for at in times if (job, at) not in per_key)
    delays = [(queued - at).total_seconds() for _, at, queued in measured]
    unit = "minute" if cadence.period == timedelta(minutes=1) else "second"
    if not delays:
        print(f"[3] no fire in the window {low} .. {high}")
        return
    late = sum(1 for d in delays if d > 1.0)
    fires = len(measured)
    print(
        f"[3] {periods} {unit}(s) from {low:%H:%M:%S}: fire delay p50 "
        f"{percentile(delays, 50) * 1000:.0f} ms, p99 {percentile(delays, 99) * 1000:.0f} ms, "
        f"max {max(delays) * 1000:.0f} ms ({late} of {fires} late > 1 s); duplicates "
        f"{duplicates}, missed {missed}; {fires / periods:.0f} fires/{unit} of "
        f"{args.jobs} expected (ratio {fires / expected:.3f}); scheduler CPU "
        f"{m.scheduler_cpu / max(fires, 1) * 1000:.2f} s/1k fires "
        f"(api+relay+projector {m.others_cpu / max(fires, 1) * 1000:.2f} s/1k)"
        + ("" if m.complete else "; the last period was not all fired within the wait")
    )
    stored = [(at_db - at).total_seconds() for at, at_db in recorded]
    print(
        f"    the same by the database's clock (recorded_at: the start of the append's "
        f"transaction): p50 {percentile(stored, 50) * 1000:.0f} ms, p99 "
        f"{percentile(stored, 99) * 1000:.0f} ms, max {max(stored) * 1000:.0f} ms"
    )
    window = {name: m.after[name] - m.before[name] for name in COUNTERS}
    print(
        "    job_schedules' counters, start to window: "
        + ", ".join(f"{name} {m.before[name]}" for name in COUNTERS)
        + "; over the window: "
        + ", ".join(f"{name} {window[name]}" for name in COUNTERS)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000, help="enabled jobs")
    parser.add_argument("--minutes", type=int, default=2, help="whole minutes measured")
    parser.add_argument("--schedulers", type=int, default=2, help="`norn scheduler` processes")
    parser.add_argument("--clients", type=int, default=16, help="job creates at once")
    parser.add_argument("--smoke", action="store_true", help="100 jobs every second, for CI")
    args = parser.parse_args()
    cadence = MINUTELY
    args.periods = args.minutes
    if args.smoke:
        cadence, args.jobs, args.periods = SECONDLY, 100, 10
    with norn_server(commands=("api", "relay", "projector")) as server:
        measured = run_bench(server, args, cadence)
        report(server, args, cadence, measured)


if __name__ == "__main__":
    main()
