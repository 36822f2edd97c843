"""What each `norn` command does (the arguments are in api/cli.py). Operator commands use
the data dir's running embedded servers and leave them running (infrastructure/embedded)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from api.cli_support import CliError, ProgressLine, open_listener, say
from infrastructure import event_loop
from infrastructure.garbage_collection import tune_for_service
from infrastructure.settings import Settings

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("norn")

BACKGROUND_ROLES = {"relay", "projector", "executor", "scheduler", "notifier"}


def announce_for_command(message: str) -> None:
    """What a one-shot command says when it starts an embedded server itself."""
    say(f"{message}; it stops when this command ends (unless another process uses it)")


def serve(settings: Settings, args: argparse.Namespace) -> int:
    workers = settings.http_workers_beside(answers_itself=False)
    if workers >= 1:
        return _run_roles_beside_workers(settings, BACKGROUND_ROLES, workers)
    return _run_http(settings, BACKGROUND_ROLES, 0)


def api(settings: Settings, args: argparse.Namespace) -> int:
    return _run_http(settings, set(), settings.http_workers_beside(answers_itself=True))


def relay(settings: Settings, args: argparse.Namespace) -> int:
    return _run_roles(settings, {"relay"})


def projector(settings: Settings, args: argparse.Namespace) -> int:
    return _run_roles(settings, {"projector"})


def executor(settings: Settings, args: argparse.Namespace) -> int:
    return _run_roles(settings, {"executor"})


def scheduler(settings: Settings, args: argparse.Namespace) -> int:
    return _run_roles(settings, {"scheduler"})


def notifier(settings: Settings, args: argparse.Namespace) -> int:
    return _run_roles(settings, {"notifier"})


def http_server_config(app: Any, settings: Settings) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through ours (NORN_LOG_FORMAT)
        # No access log: at "warning" its lines were never written, but uvicorn still
        # called the logger for every response (1.5% of a GET's CPU).
        access_log=False,
        lifespan="on",
        # Open SSE streams never end by themselves: give them a moment, then close.
        timeout_graceful_shutdown=3,
        # An idle connection outlives the client's and the load balancer's idea of it
        # (settings.http_keepalive says why).
        timeout_keep_alive=settings.http_keepalive,
        # No permessage-deflate: it compresses every event once per WebSocket (its state
        # is the connection's), a tenth of the CPU of 100 feeds at 200 events/s
        # (bench/feeds.py), to save bandwidth a control plane's clients rarely lack.
        ws_per_message_deflate=False,
        # The client address (login throttling) from X-Forwarded-For, but only when a
        # trusted reverse proxy sent it.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def _http_listener(settings: Settings) -> socket.socket:
    # First of all: a port in use (or a host that is not ours) ends the start here,
    # before initdb, the embedded servers or the one-time admin password, and before
    # importing the app (seconds on a loaded machine).
    try:
        return open_listener(settings.host, settings.port)
    except OSError as error:
        raise CliError(
            f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error} "
            "(set NORN_HOST / NORN_PORT)",
            exit_code=1,
        ) from None


def _bootstrap_admin(container: Any) -> None:
    from api.bootstrap import bootstrap_admin
    from domain.errors import InvalidCommand

    try:
        bootstrap_admin(container, announce=lambda text: print(text, flush=True))
    except InvalidCommand as error:
        raise CliError(f"cannot create the bootstrap admin: {error}", 2) from None


def _run_http(settings: Settings, roles: set[str], workers: int) -> int:
    """The API in this process, with `roles` beside it on its event loop (`norn serve`
    with no HTTP workers), and `workers` API-only workers (`norn api`)."""
    listener = _http_listener(settings)
    try:
        import uvicorn

        from api.app import create_app
        from api.bootstrap import build_container, start_servers
        from api.http_workers import shared_metrics, start_workers

        servers = start_servers(settings, announce=say)
        metrics_dir = shared_metrics(workers)
        container = build_container(settings, servers.database_url, servers.nats_url)
        started = None
        try:
            _bootstrap_admin(container)
            app = create_app(container, roles)
            tune_for_service()
            _say_listening(settings)
            # uvicorn re-raises the signal that stopped it once it has shut down; with the
            # default handlers that would kill the process before the embedded servers stop.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: None)
            server = uvicorn.Server(http_server_config(app, settings))
            if metrics_dir is not None:
                started = start_workers(
                    settings, listener, servers, container, metrics_dir, workers
                )
            server.run(sockets=[listener])
            if not server.started:
                return 1
        finally:
            if started is not None:
                started.stop()  # before the servers they use
            container.close()
            servers.stop()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    finally:
        listener.close()
    return 0


def _run_roles_beside_workers(settings: Settings, roles: set[str], workers: int) -> int:
    """`norn serve` with `workers` >= 1: that many API-only workers answer on
    this process's port, and this process runs the background roles only. On the API's
    event loop, the relay and the projector waited behind every request in a burst: at
    500 creates/s a command reached the read model 55 ms-1 s after its response (p50),
    against 24-81 ms with the roles in a process of their own (docs/architecture.md §1)."""
    listener = _http_listener(settings)
    try:
        from api.bootstrap import build_container, start_servers
        from api.http_workers import shared_metrics, start_workers

        servers = start_servers(settings, announce=say)
        metrics_dir = shared_metrics(workers)
        assert metrics_dir is not None, "only with a worker or more"
        try:
            container = build_container(settings, servers.database_url, servers.nats_url)
            try:
                _bootstrap_admin(container)
                _say_listening(settings)
                # A signal before the roles' loop takes them over is kept for it; after
                # the loop, one must not cut the clean-up short (as in _run_http).
                stopping = threading.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, lambda *_: stopping.set())
                started = start_workers(
                    settings, listener, servers, container, metrics_dir, workers
                )
                try:
                    # The workers stop first: they finish their requests while the roles
                    # still run.
                    event_loop.run(
                        _serve_roles(
                            container, roles, settings, before_stop=started.stop, stopping=stopping
                        )
                    )
                finally:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        signal.signal(sig, lambda *_: None)
                    started.stop()  # if the roles never started (a stop does nothing twice)
            finally:
                container.close()
        finally:
            servers.stop()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    finally:
        listener.close()
    return 0


def _say_listening(settings: Settings) -> None:
    print(f"Norn listening on http://{settings.host}:{settings.port} (docs: /schema)", flush=True)


def _run_roles(settings: Settings, roles: set[str]) -> int:
    # The metrics port is taken before anything starts (even the imports), like the
    # API's: a busy one fails at once, with nothing to clean up (it once left a process
    # that ignored SIGTERM).
    metrics_listener = None
    if settings.metrics_port is not None:
        try:
            metrics_listener = open_listener(settings.host, settings.metrics_port)
        except OSError as error:
            raise CliError(
                f"cannot listen on {settings.host}:{settings.metrics_port} for metrics: "
                f"{error.strerror or error} (set NORN_METRICS_PORT)",
                exit_code=1,
            ) from None

    from api.bootstrap import build_container, start_servers

    async def run() -> None:
        servers = start_servers(settings, announce=say)
        try:
            container = build_container(settings, servers.database_url, servers.nats_url)
            try:
                await _serve_roles(container, roles, settings, metrics_listener=metrics_listener)
            finally:
                container.close()
        finally:
            servers.stop()

    try:
        event_loop.run(run())
    finally:
        if metrics_listener is not None:
            metrics_listener.close()
    return 0


async def _serve_roles(
    container: Any,
    roles: set[str],
    settings: Settings,
    *,
    metrics_listener: socket.socket | None = None,
    before_stop: Callable[[], None] | None = None,
    stopping: threading.Event | None = None,
) -> None:
    """Run `roles` (no HTTP) until SIGINT or SIGTERM (or `stopping` was set before);
    `before_stop` is called (in a thread: it may block) once a signal came, before the
    roles stop."""
    from api.bootstrap import Roles

    background = Roles(container, roles, serves_http=False)
    tune_for_service()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stopping is not None and stopping.is_set():
        stop.set()
    # Blocking work of the roles (the executor's store, plugins' files) runs in threads:
    # as many as the API's (api/app.py), not the default of cores + 4.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="norn-roles"))
    await container.read_pool.open()
    metrics_server = None
    try:
        if metrics_listener is not None:
            # These roles serve no HTTP: their metrics get a port of their own.
            from infrastructure.metrics_server import serve_metrics

            metrics_server = serve_metrics(
                metrics_listener, container.metrics.exposed, settings.metrics_token
            )
            log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        await background.start()
        await stop.wait()
    finally:
        if before_stop is not None:
            await asyncio.to_thread(before_stop)
        if metrics_server is not None:
            metrics_server.shutdown()
        await background.stop()
        await container.read_pool.close()


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers
    from infrastructure.migrations import migrate as apply_migrations

    servers = start_servers(
        settings, run_migrations=False, nats=False, announce=announce_for_command
    )
    try:
        applied = apply_migrations(servers.database_url)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    finally:
        servers.stop()
    return 0


def projection_status(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers
    from projections import ALL_PROJECTIONS, projection_status

    servers = start_servers(settings, nats=False, announce=announce_for_command)
    try:
        rows = asyncio.run(projection_status(servers.database_url, ALL_PROJECTIONS))
        print(f"{'projection':<20} {'position':>10} {'head':>10} {'lag':>8}")
        for row in rows:
            print(
                f"{row['name']:<20} {row['position']:>10} {row['max_position']:>10} {row['lag']:>8}"
            )
    finally:
        servers.stop()
    return 0


def projection_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers
    from projections import ALL_PROJECTIONS, rebuild

    by_name = {p.name: p for p in ALL_PROJECTIONS}
    if args.name not in by_name:
        raise CliError(f"unknown projection {args.name!r}; one of {', '.join(by_name)}", 2)
    servers = start_servers(settings, nats=False, announce=announce_for_command)
    progress = ProgressLine(f"rebuilding {args.name}", sys.stderr)
    started = time.monotonic()
    try:
        position = asyncio.run(rebuild(by_name[args.name], servers.database_url, progress.update))
    finally:
        progress.finish()
        servers.stop()
    print(f"rebuilt {args.name} up to position {position} in {time.monotonic() - started:.1f}s")
    return 0


def create_user(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build_container, start_servers
    from application.principal import system_principal
    from domain.events import CommandContext

    try:
        password = getpass.getpass("password: ")
    except EOFError:
        raise CliError("no password given", 2) from None
    servers = start_servers(settings, nats=False, announce=announce_for_command)
    container = build_container(settings, servers.database_url, servers.nats_url)
    try:
        roles = tuple(args.roles or (["platform_admin"] if args.tenant is None else ["viewer"]))
        user = container.users.create(
            system_principal("cli"),
            username=args.username,
            password=password,
            tenant_id=args.tenant,
            roles=roles,
            ctx=CommandContext(actor="system:cli", correlation_id=str(uuid4())),
        ).state
        print(f"created user {user.username} ({user.id}) with roles {', '.join(user.roles)}")
    finally:
        container.close()
        servers.stop()
    return 0


def jwt_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """Rotate the data dir's signing key (the embedded default). Only files change: no
    database or NATS is needed, and running API processes pick the key up on restart."""
    from infrastructure.security import data_dir_keys, key_id, rotate_data_dir_key

    if settings.jwt_secret:
        raise CliError(
            "NORN_JWT_SECRET is set, so the signing key comes from the environment and "
            "the data dir's key is not used. To rotate: set NORN_JWT_SECRET to a new key "
            "(at least 32 bytes), put the old one in NORN_JWT_PREVIOUS_SECRETS "
            "(comma-separated) so the tokens it signed keep working until they expire, "
            "and restart every API process.",
            2,
        )
    if not 0 <= args.keep <= 100:
        raise CliError("--keep must be between 0 and 100", 2)
    new_kid = rotate_data_dir_key(settings.data_dir, keep=args.keep)
    still_verifying = [key_id(key) for key in data_dir_keys(settings.data_dir)[1:]]
    print(f"new JWT signing key: kid {new_kid} (in {settings.data_dir})")
    print(f"previous keys still verifying: {', '.join(still_verifying)}")
    print("restart every running API process (norn serve / norn api) to sign with the new key")
    return 0
