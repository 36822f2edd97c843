"""Benchmark: the command and query figures of issue 9, each on one line beside a
reference measured in the same run.

    .venv/bin/python bench/commands.py [--seconds 10] [--clients 16] [--rate 500] [--apart]
                                       [--http-workers N] [--smoke]

[1] create-pipeline commands/s, p50/p99 at N clients (closed loop), beside the raw
    psycopg INSERT+COMMIT rate into the same database at the same concurrency, and their
    ratio; then the same from wrk, a C load generator (bench/wrk.py), where it is
    installed (its creates are not in [3] and [4]).
[2] GET /api/v1/pipelines/{id} /s, p50/p99 at N clients (random ids of pipelines made in
    [1]), beside a raw psycopg SELECT by primary key at the same concurrency; then the
    same from wrk, a C load generator (bench/wrk.py), where it is installed.
[3] committed transactions per create, whole system: pg_stat_database.xact_commit of the
    bench database over [1], beside the same for the raw INSERT phase (~1). See
    CommitCounter for why readings wait --settle seconds.
[4] after the [1] burst: how long after the last command returned the `pipelines`
    projection's projection_tracking position holds the highest position [1] returned.
[5] projection lag p50/p99 at an offered --rate commands/s (open loop, sent with aiohttp:
    httpx could not offer 500/s beside norn on two cores), per command from its response
    to the first poll (every ~1 ms, from another process) that sees its position, with
    the achieved rate; beside the sequential lag (one command at a time on
    an otherwise idle system), which is kept because it is a different figure: the
    floor, with no queue; and the quiet lag, the same with about QUIET seconds between two
    commands, so that each meets a system at its idle pace (what a command sees on a
    lightly used install). Then the open loop again from wrk (bench/wrk.py paces its
    creates at --rate), where it is installed: the Python sender takes about a fifth of
    a core at 500/s, on the two cores norn shares with it.
--apart: each role in its own process (`norn api`, `norn relay`, ...; README "Roles in
their own processes") instead of `norn serve`; CPU is then summed over them all.
--http-workers N: `norn serve` with NORN_HTTP_WORKERS=N (its CPU includes the workers').

[1], [2] and [5] give the `norn serve` process's CPU seconds (user+system, with its
children; psutil) per 1,000 commands over the phase.

Uses NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL if set (a fresh database is created
on that server), else embedded servers in a temporary directory. The API runs as a
separate `norn serve` process with every role, so the figures include the relay,
projector and executor sharing the machine, as on a one-machine install. Only the HTTP
API, projection_tracking and pg_stat views are used."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import httpx
import psycopg
from harness import (
    ROLES_APART,
    CommitCounter,
    OpenLoop,
    PositionPoller,
    Server,
    editor_of_new_tenant,
    norn_server,
    open_loop,
    percentile,
    profiled,
    server_cpu_seconds,
)
from wrk import WrkResult, wrk_creates, wrk_gets, wrk_paced_creates

RAW_APP = "norn-bench-raw"
QUIET = 0.2
"""Seconds between the commands of the quiet lag (on average)."""


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


@dataclass
class Creates:
    latencies: list[float]
    ids: list[str]
    max_position: int
    last_response: float  # time.monotonic()


async def http_creates(base: str, headers: dict, clients: int, seconds: float) -> Creates:
    done = Creates([], [], 0, 0.0)
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
                done.latencies.append(time.perf_counter() - started)
                done.last_response = max(done.last_response, time.monotonic())
                answer = r.json()
                done.ids.append(answer["id"])
                done.max_position = max(done.max_position, answer["position"])
                i += 1

        await asyncio.gather(*(worker(w) for w in range(clients)))
    return done


async def http_gets(
    base: str, headers: dict, ids: list[str], clients: int, seconds: float
) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)

    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:

        async def worker() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                r = await c.get(f"/api/v1/pipelines/{random.choice(ids)}")
                if r.status_code != 200:
                    raise RuntimeError(f"get failed: {r.status_code} {r.text}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def raw_threads(
    database_url: str, clients: int, seconds: float, statement: Callable[[psycopg.Connection], None]
) -> int:
    """`statement(conn)` in a loop on `clients` connections of their own for `seconds`;
    how many ran. The connections are closed (their statistics flushed) on return."""
    counts = [0] * clients
    errors: list[Exception] = []
    deadline = time.monotonic() + seconds

    def worker(w: int) -> None:
        try:
            with psycopg.connect(database_url, application_name=RAW_APP) as conn:
                while time.monotonic() < deadline:
                    statement(conn)
                    counts[w] += 1
        except Exception as error:  # raised below: a reference short of clients is wrong
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} raw clients failed") from errors[0]
    return sum(counts)


def wrk_line(label: str, result: WrkResult | None, seconds: float, cpu: float) -> str:
    """A phase's figures from wrk: rate, latency, refusals and norn's CPU per 1,000."""
    if result is None:
        return f"{label} by wrk (a C client): not run, wrk is not installed"
    return (
        f"{label} by wrk (a C client): {result.requests / seconds:.0f}/s,"
        f" p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
        f" {result.not_ok} answered >= 400, {result.socket_errors} socket errors,"
        f" norn CPU {cpu / max(1, result.requests) * 1000:.2f} s/1k"
    )


def reference(label: str, result: WrkResult | None, seconds: float, rate: float) -> str:
    """The raw reference of a wrk phase, and the phase's rate as a share of it."""
    if result is None:
        return ""
    return f" | {label}: {rate:.0f}/s | ratio {result.requests / seconds / rate:.1%}"


def until_projected(database_url: str, limit: float = 120) -> None:
    """Until the pipelines read model holds the store's newest event: the next phase
    must not share the machine with a catch-up."""
    deadline = time.monotonic() + limit
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT max(notification_id) FROM norn_events) <= (SELECT position"
                " FROM projection_tracking WHERE name = 'pipelines')"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)


def raw_inserts(database_url: str, clients: int, seconds: float) -> int:
    payload = os.urandom(400)

    def insert(conn: psycopg.Connection) -> None:
        conn.execute("INSERT INTO bench_raw (body) VALUES (%s)", (payload,))
        conn.commit()

    return raw_threads(database_url, clients, seconds, insert)


def raw_selects(database_url: str, clients: int, seconds: float) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT max(id) FROM bench_raw").fetchone()
        top = row[0] if row and row[0] else 1

    def select(conn: psycopg.Connection) -> None:
        conn.execute("SELECT body FROM bench_raw WHERE id = %s", (random.randint(1, top),))
        conn.commit()

    return raw_threads(database_url, clients, seconds, select)


@dataclass
class Lags:
    lags: list[float]
    failed: Counter[str]
    completed_rate: float
    send_rate: float
    cpu_per_1k: float
    poll_interval: float


def open_loop_lag(server: Server, headers: dict, rate: float, seconds: float, senders: int) -> Lags:
    """Creates sent at `rate`/s for `seconds` by up to `senders` concurrent requests;
    each one's lag is from its response to the first poll that sees its position."""
    answered: list[tuple[float, int]] = []  # (response time.monotonic(), position)
    failed: Counter[str] = Counter()  # why: an HTTP status or an exception's class

    async def load() -> OpenLoop:
        # aiohttp, not httpx: at 500/s httpx took the benchmark most of a core, on the
        # two cores norn runs on, and offered only about half the rate.
        connector = aiohttp.TCPConnector(limit=senders)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(
            server.base, headers=headers, connector=connector, timeout=timeout
        ) as c:

            async def send(i: int) -> None:
                try:
                    async with c.post("/api/v1/pipelines", json=body(i)) as r:
                        if r.status != 201:
                            failed[str(r.status)] += 1
                            return
                        position = (await r.json())["position"]
                except (aiohttp.ClientError, TimeoutError) as error:
                    failed[type(error).__name__] += 1
                    return
                answered.append((time.monotonic(), position))

            return await open_loop(rate, seconds, senders, send)

    lags = _measured(server, lambda: asyncio.run(load()), answered, failed)
    assert lags is not None  # load always runs
    return lags


def paced_lag(
    server: Server, headers: dict, rate: float, seconds: float, senders: int
) -> Lags | None:
    """[5] again with wrk sending (bench/wrk.py): creates paced at `rate`/s over up to
    `senders` connections, each one's lag as in open_loop_lag. None without wrk."""
    answered: list[tuple[float, int]] = []
    failed: Counter[str] = Counter()

    def load() -> OpenLoop | None:
        started = time.monotonic()
        paced = wrk_paced_creates(
            server.base, headers, "/api/v1/pipelines", body(0), rate, senders, seconds
        )
        if paced is None:
            return None
        answered.extend(paced.answered)
        for why, k in (("not 201", paced.not_ok), ("socket error", paced.socket_errors)):
            if k:
                failed[why] += k
        # The rate wrk held: its requests over its own measure of the run.
        return OpenLoop(paced.sent, started, started + paced.seconds, time.monotonic())

    return _measured(server, load, answered, failed)


def _measured(
    server: Server,
    load: Callable[[], OpenLoop | None],
    answered: list[tuple[float, int]],
    failed: Counter[str],
) -> Lags | None:
    """Runs `load` (which fills `answered`) with the position poller going, and each
    answered create's lag: from its response to the first poll that sees its position."""
    with PositionPoller(server.database_url, "pipelines") as poller:
        cpu = server_cpu_seconds(server)
        poller.go()
        run = load()
        if run is None:
            return None
        if not answered:
            raise RuntimeError(f"open loop: no create succeeded (failed: {dict(failed)})")
        log = poller.until(max(p for _, p in answered))
        cpu = server_cpu_seconds(server) - cpu
    lags = []
    for at, position in answered:
        seen = log.reached(position, at)
        if seen is None:
            raise RuntimeError(f"projection never reached position {position}")
        lags.append(seen - at)
    last = max(at for at, _ in answered)
    return Lags(
        lags=lags,
        failed=failed,
        completed_rate=len(answered) / (last - run.started),
        send_rate=run.send_rate,
        cpu_per_1k=cpu / len(answered) * 1000,
        poll_interval=log.median_interval(),
    )


def sequential_lag(
    base: str, headers: dict, database_url: str, samples: int, pause: float = 0.0
) -> list[float]:
    """One create at a time; the time from its response until the read model has it.
    `pause`: seconds of quiet between two (random, up to twice it), so that each meets a
    system that has settled down to its idle pace (the relay its poll interval)."""
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
                time.sleep(random.uniform(0, 2 * pause))
    return lags


@dataclass(frozen=True)
class Mark:
    """The bench database's commit counter, the clock and norn serve's CPU, at once."""

    commits: int
    at: float
    cpu: float

    @staticmethod
    def take(server: Server, counter: CommitCounter) -> Mark:
        return Mark(counter.read(), time.monotonic(), server_cpu_seconds(server))


def lag_line(lag: Lags) -> str:
    failed = "".join(f", {k} failed: {why}" for why, k in lag.failed.most_common())
    return (
        f"{p50_p99(lag.lags)}, achieved {lag.completed_rate:.0f}/s (scheduled at "
        f"{lag.send_rate:.0f}/s{failed}), polled every {ms(lag.poll_interval)}, "
        f"norn CPU {lag.cpu_per_1k:.1f} s/1k"
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def p50_p99(values: list[float]) -> str:
    return f"p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=500.0, help="offered commands/s of [5]")
    # 16, not 64: httpx's pool looks at every connection for every request it places, so
    # 64 busy ones cost this process more CPU the slower the server got (bench/feeds.py).
    parser.add_argument("--senders", type=int, default=16, help="concurrent requests of [5]")
    parser.add_argument(
        "--lag-seconds", type=float, help="how long [5] offers its load (default: --seconds)"
    )
    parser.add_argument("--lag-samples", type=int, default=200)
    parser.add_argument(
        "--settle",
        type=float,
        default=CommitCounter.SETTLE,
        help="wait before a pg_stat_database reading (PostgreSQL flushes after 10 s idle)",
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
        # [5] briefest: beyond capacity, its queue takes several times as long to drain.
        args.seconds, args.lag_seconds, args.lag_samples, args.settle = 2.0, 0.5, 20, 1.0
    if args.lag_seconds is None:
        args.lag_seconds = args.seconds
    out: list[str] = []

    commands = ROLES_APART if args.apart else ("serve",)
    workers = {} if args.http_workers is None else {"NORN_HTTP_WORKERS": str(args.http_workers)}
    with norn_server(workers, commands=commands) as server:
        # Far from its quota (creates skip the tenant's quota lock, see application/quotas.py).
        _, headers = asyncio.run(editor_of_new_tenant(server.base, {"max_pipelines": 10_000_000}))
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_raw (id bigserial PRIMARY KEY, body bytea)")
        commits = CommitCounter(server)
        with PositionPoller(server.database_url, "pipelines") as catch_up:
            # Norn idle: its background commits/s, taken between two settled readings.
            time.sleep(args.settle)
            idle = Mark.take(server, commits)
            time.sleep(args.settle)
            start = Mark.take(server, commits)
            idle_rate = (start.commits - idle.commits) / (start.at - idle.at)
            idle_cpu = (start.cpu - idle.cpu) / (start.at - idle.at)

            # [1] closed-loop creates; [4] then the catch-up; [3] over both plus a settle.
            with profiled(server.pid, "create", args.seconds):
                creates = asyncio.run(
                    http_creates(server.base, headers, args.clients, args.seconds)
                )
            log = catch_up.until(creates.max_position)
            create_cpu = server_cpu_seconds(server) - start.cpu
        time.sleep(args.settle)
        settled = Mark.take(server, commits)

        # [1] again from wrk (no client in Python sharing the two cores).
        cpu = server_cpu_seconds(server)
        with profiled(server.pid, "create-wrk", args.seconds):
            wrk_made = wrk_creates(
                server.base, headers, "/api/v1/pipelines", body(0), args.clients, args.seconds
            )
        wrk_create_cpu = server_cpu_seconds(server) - cpu
        until_projected(server.database_url)
        time.sleep(args.settle)  # the raw phase's commits are read from here
        settled_again = Mark.take(server, commits)

        # Raw INSERT+COMMIT; its connections are closed (flushed) before the reading.
        inserts = raw_inserts(server.database_url, args.clients, args.seconds)
        commits.wait_gone(RAW_APP)
        raw_end = Mark.take(server, commits)

        # [2] GETs and their raw reference.
        cpu = server_cpu_seconds(server)
        with profiled(server.pid, "get", args.seconds):
            gets = asyncio.run(
                http_gets(server.base, headers, creates.ids, args.clients, args.seconds)
            )
        get_cpu = server_cpu_seconds(server) - cpu
        cpu = server_cpu_seconds(server)
        paths = [f"/api/v1/pipelines/{i}" for i in creates.ids]
        with profiled(server.pid, "get-wrk", args.seconds):
            by_wrk = wrk_gets(server.base, headers, paths, args.clients, args.seconds)
        wrk_cpu = server_cpu_seconds(server) - cpu
        selects = raw_selects(server.database_url, args.clients, args.seconds)

        # [5] open-loop lag, and the sequential lag.
        lag = open_loop_lag(server, headers, args.rate, args.lag_seconds, args.senders)
        until_projected(server.database_url)
        time.sleep(args.settle)
        by_wrk_lag = paced_lag(server, headers, args.rate, args.lag_seconds, args.senders)
        seq = sequential_lag(server.base, headers, server.database_url, args.lag_samples)
        quiet = sequential_lag(
            server.base, headers, server.database_url, max(10, args.lag_samples // 4), QUIET
        )
        commits.close()

    n = len(creates.latencies)
    create_rate, raw_rate = n / args.seconds, inserts / args.seconds
    get_rate, select_rate = len(gets) / args.seconds, selects / args.seconds
    out.append(
        f"setup: {args.clients} clients, {args.seconds:g} s per phase; norn serve idle: "
        f"{idle_rate:.1f} commits/s, {idle_cpu:.3f} CPU s/s"
    )
    out.append(
        f"[1] create pipeline: {create_rate:.0f}/s, {p50_p99(creates.latencies)}, "
        f"norn CPU {create_cpu / n * 1000:.1f} s/1k ({n} commands) | "
        f"raw INSERT+COMMIT: {raw_rate:.0f}/s | ratio {create_rate / raw_rate:.1%}"
    )
    out.append(
        wrk_line("[1] create pipeline", wrk_made, args.seconds, wrk_create_cpu)
        + reference("raw INSERT+COMMIT", wrk_made, args.seconds, raw_rate)
    )
    out.append(
        f"[2] GET pipeline: {get_rate:.0f}/s, {p50_p99(gets)}, "
        f"norn CPU {get_cpu / len(gets) * 1000:.1f} s/1k | "
        f"raw SELECT by id: {select_rate:.0f}/s | ratio {get_rate / select_rate:.1%}"
    )
    out.append(
        wrk_line("[2] GET pipeline", by_wrk, args.seconds, wrk_cpu)
        + reference("raw SELECT by id", by_wrk, args.seconds, select_rate)
    )
    # [3]: deltas between readings taken --settle s after the phase's end; net of the
    # poller's own SELECTs and of Norn's idle background over the whole window.
    window = settled.at - start.at
    gross = settled.commits - start.commits
    net = gross - log.polls - idle_rate * window
    raw_net = raw_end.commits - settled_again.commits - idle_rate * (raw_end.at - settled_again.at)
    caveat = "" if args.settle >= 10.5 else f" (settle {args.settle:g} s < 10 s: undercounted)"
    out.append(
        f"[3] commits per create (pg_stat_database.xact_commit): {net / n:.2f} net, "
        f"{gross / n:.2f} gross ({gross} over {window:.0f} s less {log.polls} own polls, "
        f"{idle_rate * window:.0f} idle){caveat} | raw INSERT: {raw_net / inserts:.3f}/insert"
    )
    seen = log.reached(creates.max_position, creates.last_response)
    first = log.times[0] - creates.last_response
    behind = creates.max_position - log.positions[0]
    if seen is None:
        caught = "not within 120 s"
    elif behind <= 0:
        caught = f"<= {ms(first)} (there at the first poll)"
    else:
        caught = f"{ms(seen - creates.last_response)} ({behind} positions behind at the first poll)"
    out.append(
        f"[4] read model has the [1] burst's last position {caught} after its last response, "
        f"polled every {ms(log.median_interval())} | sequential lag p50 {ms(percentile(seq, 50))}"
    )
    out.append(
        f"[5] projection lag at {args.rate:g}/s offered for {args.lag_seconds:g} s (open loop, "
        f"{args.senders} senders): {lag_line(lag)} | sequential (one at a time): "
        f"{p50_p99(seq)} | quiet (one every ~{QUIET:g} s): {p50_p99(quiet)}"
    )
    if by_wrk_lag is not None:
        out.append(
            f"[5] projection lag by wrk (a C client, paced at {args.rate:g}/s, "
            f"{args.senders} connections): {lag_line(by_wrk_lag)}"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
