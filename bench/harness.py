"""What the benchmarks share: a `norn serve` process on a fresh database (on the servers
named by NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL, else embedded ones in a temporary
directory), a tenant with an editor, percentiles, an open-loop load generator, and three
outside views of the system: the server process's CPU time (psutil), the bench
database's committed transactions (pg_stat_database) and a projection's position
(projection_tracking) polled from another process. Everything is removed afterwards.

The benchmarks use only the HTTP API, projection_tracking and pg_stat views, so they keep
measuring whatever the event store and relay become."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.js.errors
import psutil
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infrastructure.embedded import EmbeddedNats, EmbeddedPostgres, free_port

ADMIN, PASSWORD = "bench-admin", "correct-horse-staple-42"
NORN = str(Path(sys.executable).parent / "norn")
UNLIMITED = ",".join(
    f"{plan}=100000000/1000000" for plan in ("free", "pro", "enterprise", "platform")
)


@dataclass(frozen=True)
class Server:
    base: str
    database_url: str
    data_dir: Path
    admin_url: str  # the same PostgreSQL server's maintenance database
    dbname: str
    pid: int  # of `norn serve` (of the command serving HTTP)
    pids: tuple[int, ...] = ()  # of every command started, that one first
    env: dict[str, str] = field(default_factory=dict, repr=False)  # theirs: see norn_process


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextmanager
def norn_server(
    extra_env: dict[str, str] | None = None, commands: Sequence[str] = ("serve",)
) -> Iterator[Server]:
    """`norn serve` with every role, its own database, stream and data dir. The request
    rate limits are lifted: the benchmarks measure the work, not the plans. `commands`:
    other `norn` commands instead, each its own process on the same settings, the first
    serving HTTP (e.g. ("api", "relay", "projector"): no executor, no scheduler)."""
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-"))
    embedded: list[EmbeddedPostgres | EmbeddedNats] = []
    admin_url = os.environ.get("NORN_BENCH_DATABASE_URL")
    nats_url = os.environ.get("NORN_BENCH_NATS_URL")
    dbname = f"norn_bench_{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex[:8]
    server = None
    others: list[subprocess.Popen[bytes]] = []
    try:
        if not admin_url:
            pg = EmbeddedPostgres(tmp)
            embedded.append(pg)
            admin_url = pg.start()
        if not nats_url:
            nats_server = EmbeddedNats(tmp)
            embedded.append(nats_server)
            nats_url = nats_server.start()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        database_url = make_conninfo(admin_url, dbname=dbname)
        port = free_port()
        env = {
            **os.environ,
            "NORN_DATABASE_URL": database_url,
            "NORN_NATS_URL": nats_url,
            "NORN_PORT": str(port),
            "NORN_DATA_DIR": str(tmp / "data"),
            "NORN_ADMIN_USERNAME": ADMIN,
            "NORN_ADMIN_PASSWORD": PASSWORD,
            "NORN_NATS_STREAM": f"BENCH_{token.upper()}",
            "NORN_SUBJECT_PREFIX": f"bench{token}",
            "NORN_LOG_LEVEL": "WARNING",
            "NORN_RATE_LIMITS": UNLIMITED,
            **(extra_env or {}),
        }
        server = subprocess.Popen([NORN, commands[0]], env=env)  # noqa: S603
        others = [subprocess.Popen([NORN, c], env=env) for c in commands[1:]]  # noqa: S603
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_ready(base))
        yield Server(
            base=base,
            database_url=database_url,
            data_dir=tmp / "data",
            admin_url=admin_url,
            dbname=dbname,
            pid=server.pid,
            pids=(server.pid, *(p.pid for p in others)),
            env=env,
        )
    finally:
        for process in [*others, *([server] if server is not None else [])]:
            process.terminate()
        for process in [*others, *([server] if server is not None else [])]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # still drop its database and streams below
                process.kill()
                process.wait(timeout=10)
        if admin_url:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if nats_url and server is not None:  # leave a server of the machine's as found
            asyncio.run(_delete_streams(nats_url, f"BENCH_{token.upper()}"))
        for e in reversed(embedded):
            e.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def norn_process(server: Server, command: str) -> Iterator[subprocess.Popen[bytes]]:
    """One more `norn <command>` process beside a norn_server's, on its settings;
    stopped (SIGTERM) on exit if still running."""
    process = subprocess.Popen([NORN, command], env=server.env)  # noqa: S603
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


async def _delete_streams(nats_url: str, stream: str) -> None:
    """The events stream of a bench's `norn serve` and its work and dead-letter streams."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for name in (stream, f"{stream}_WORK", f"{stream}_DEAD"):
            with suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def _wait_ready(base: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{base}/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def editor_of_new_tenant(base: str, quotas: dict[str, int]) -> tuple[str, dict[str, str]]:
    """An enterprise tenant with `quotas` overridden, and its editor's headers."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        tenant = (
            await c.post(
                "/api/v1/tenants", json={"name": "bench", "plan": "enterprise"}, headers=admin
            )
        ).json()
        await c.put(f"/api/v1/tenants/{tenant['id']}/quotas", json=quotas, headers=admin)
        user = {
            "username": "bench-editor",
            "password": "battery-horse-staple-42",
            "tenant_id": tenant["id"],
            "roles": ["editor"],
        }
        await c.post("/api/v1/users", json=user, headers=admin)
        r = await c.post(
            "/api/v1/auth/login", json={"username": user["username"], "password": user["password"]}
        )
        return tenant["id"], {"Authorization": f"Bearer {r.json()['access_token']}"}


@contextmanager
def profiled(pid: int, phase: str, seconds: float) -> Iterator[None]:
    """With NORN_BENCH_PROFILE=<dir>, py-spy samples `norn serve` and its HTTP workers over
    the phase and writes <dir>/<phase>.txt (collapsed stacks; sort them with
    bench/hotspots.py). py-spy is not a project dependency: install it to use this."""
    out = os.environ.get("NORN_BENCH_PROFILE")
    if not out:
        yield
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    # --gil: only samples holding the GIL, i.e. the process's Python CPU time.
    command = [
        spy,
        "record",
        "--gil",
        "--nonblocking",
        "--subprocesses",
        "-p",
        str(pid),
        "-r",
        "200",
    ]
    command += ["-d", str(max(1, int(seconds))), "--format", "raw", "-o", f"{out}/{phase}.txt"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        yield
    finally:
        recorder.wait(timeout=60)


def norn_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far: the live ones'
    own times plus what each has collected from children it reaped, so a child that ends
    mid-phase is neither lost nor counted twice. Take the difference over a phase."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


ROLES_APART = ("api", "relay", "projector", "executor", "scheduler", "notifier")
"""`norn_server(commands=ROLES_APART)`: every role in a process of its own, as README
"Roles in their own processes" describes, instead of `norn serve`."""


def server_cpu_seconds(server: Server) -> float:
    """norn_cpu_seconds summed over every process of `server` (one for `norn serve`)."""
    return sum(norn_cpu_seconds(pid) for pid in (server.pids or (server.pid,)))


class CommitCounter:
    """pg_stat_database.xact_commit of the bench database: every transaction committed in
    it by anyone (the API, relay, projections, executor, and the benchmark's own
    connections), read over a connection to the maintenance database so that reading adds
    nothing to it.

    The counter lags: since PostgreSQL 15 a backend adds its pending counts to shared
    memory at a transaction's end at most once a second, and one that then goes idle
    does so only 10 s later (PGSTAT_IDLE_INTERVAL); a backend that exits flushes at
    once. A reading therefore includes everything committed up to SETTLE seconds before
    it, and a phase's delta is honest only if the reading that closes it is taken at least
    SETTLE seconds after the phase's last transaction."""

    SETTLE = 11.0

    def __init__(self, server: Server) -> None:
        self._dbname = server.dbname
        self._conn = psycopg.connect(
            server.admin_url, autocommit=True, application_name="norn-bench-stats"
        )

    def read(self) -> int:
        self._conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self._conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self._dbname,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def wait_gone(self, application_name: str, limit: float = 10) -> None:
        """Until no backend of that application_name is left (an exiting backend flushes
        its statistics before it leaves pg_stat_activity)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self._conn.execute("SELECT pg_stat_clear_snapshot()")
            row = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND application_name = %s",
                (self._dbname, application_name),
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.01)
        raise RuntimeError(f"backends {application_name!r} still there after {limit:g}s")

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class PollLog:
    """Every poll of a projection's position: when it answered (time.monotonic(), the
    system-wide monotonic clock, so comparable with the benchmark process's) and what.
    Tracking positions only grow."""

    times: list[float]
    positions: list[int]

    def reached(self, position: int, not_before: float) -> float | None:
        """When the first poll answered at or after not_before saw position (or beyond)."""
        i = bisect_left(self.times, not_before)
        j = bisect_left(self.positions, position, lo=i)
        return self.times[j] if j < len(self.times) else None

    @property
    def polls(self) -> int:
        return len(self.times)

    def median_interval(self) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return percentile(gaps, 50) if gaps else 0.0


def _poll(database_url: str, projection: str, go, stop, target, out) -> None:
    times: list[float] = []
    positions: list[int] = []
    query = "SELECT position FROM projection_tracking WHERE name = %s"
    with psycopg.connect(
        database_url, autocommit=True, application_name="norn-bench-poller"
    ) as conn:
        out.send("ready")
        go.wait()
        while True:
            row = conn.execute(query, (projection,)).fetchone()
            times.append(time.monotonic())
            positions.append(int(row[0]) if row else 0)
            wanted = target.value
            if (wanted >= 0 and positions[-1] >= wanted) or stop.is_set():
                break
            time.sleep(0.001)
    out.send((times, positions))


class PositionPoller:
    """Polls one projection's projection_tracking position every ~1 ms from a separate
    process, so the benchmark's busy event loop (and its GIL) cannot delay the polls.
    Started (and connected) ahead, idle until go(); until() stops it once the position
    reaches a target and returns the log. Each poll is one autocommit SELECT: one
    committed transaction in the bench database."""

    def __init__(self, database_url: str, projection: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._go, self._stop = ctx.Event(), ctx.Event()
        self._target = ctx.Value("q", -1)
        self._recv, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_poll,
            args=(database_url, projection, self._go, self._stop, self._target, send),
            daemon=True,
        )

    def __enter__(self) -> PositionPoller:
        self._process.start()
        if not self._recv.poll(60) or self._recv.recv() != "ready":
            raise RuntimeError("position poller did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._go.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()

    def go(self) -> None:
        self._go.set()

    def until(self, position: int, limit: float = 120) -> PollLog:
        """The log once the position is at least `position` (or after `limit` seconds)."""
        self._target.value = position
        self._go.set()
        if not self._recv.poll(limit):
            self._stop.set()
        times, positions = self._recv.recv()
        self._process.join(5)
        return PollLog(times, positions)


@dataclass(frozen=True)
class OpenLoop:
    count: int
    started: float  # time.monotonic()
    last_sent: float
    finished: float

    @property
    def send_rate(self) -> float:
        """The rate sends were scheduled at (below the offered one if the load generator
        itself could not keep up); each then waits for one of the senders."""
        span = self.last_sent - self.started
        return (self.count - 1) / span if span > 0 else float("nan")


async def open_loop(
    rate: float, seconds: float, senders: int, send: Callable[[int], Awaitable[None]]
) -> OpenLoop:
    """Call send(i) at started + i/rate for every i below rate x seconds, whether or not
    the earlier ones have answered (open loop: a slow system does not slow the offered
    load, it builds a queue), at most `senders` at once, then wait for them all. The queue
    beyond `senders` waits here, not in httpx's connection pool, whose waiting list costs
    the benchmark process much more CPU per request (measured: a fifth fewer creates/s)."""
    count = max(1, round(rate * seconds))
    gate = asyncio.Semaphore(senders)

    async def sender(i: int) -> None:
        async with gate:
            await send(i)

    started = time.monotonic()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(sender(i)))
    last_sent = time.monotonic()
    await asyncio.gather(*tasks)
    return OpenLoop(count, started, last_sent, time.monotonic())
