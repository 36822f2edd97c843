"""The `norn` command: serve (every role in one process), one role per process for
scaling out, and operator tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from collections.abc import Sequence
from uuid import uuid4

from infrastructure.settings import Settings, SettingsError

log = logging.getLogger("norn")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"norn: configuration error: {error}", file=sys.stderr)
        return 2
    from infrastructure.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.func(settings, args) or 0)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="norn", description="Norn control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve", help="run every role in one process (embedded servers if no URLs)"
    ).set_defaults(func=lambda s, a: _run_http(s, {"relay", "projector", "executor"}))
    sub.add_parser("api", help="run the HTTP API only").set_defaults(
        func=lambda s, a: _run_http(s, set())
    )
    sub.add_parser("relay", help="run the outbox relay to NATS").set_defaults(
        func=lambda s, a: _run_roles(s, {"relay"})
    )
    sub.add_parser("projector", help="run the projections").set_defaults(
        func=lambda s, a: _run_roles(s, {"projector"})
    )
    sub.add_parser("executor", help="execute runs (competing with other executors)").set_defaults(
        func=lambda s, a: _run_roles(s, {"executor"})
    )
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)
    proj = sub.add_parser("projections", help="projection status and rebuild")
    proj_sub = proj.add_subparsers(dest="action", required=True)
    proj_sub.add_parser("status").set_defaults(func=_projection_status)
    rebuild = proj_sub.add_parser("rebuild")
    rebuild.add_argument("name")
    rebuild.set_defaults(func=_projection_rebuild)
    users = sub.add_parser("users", help="user administration")
    users_sub = users.add_subparsers(dest="action", required=True)
    create = users_sub.add_parser("create")
    create.add_argument("username")
    create.add_argument("--tenant", default=None, help="tenant id (omit for a platform admin)")
    create.add_argument("--role", action="append", dest="roles", help="repeatable")
    create.set_defaults(func=_create_user)
    events = sub.add_parser("events", help="the event stream")
    events_sub = events.add_subparsers(dest="action", required=True)
    tail = events_sub.add_parser("tail", help="print events (CloudEvents JSON) as they happen")
    tail.add_argument("--from", dest="from_position", type=int, default=None)
    tail.set_defaults(func=_events_tail)
    jwt_ = sub.add_parser("jwt", help="JWT signing keys")
    jwt_sub = jwt_.add_subparsers(dest="action", required=True)
    rotate = jwt_sub.add_parser(
        "rotate", help="new signing key in the data dir; the old one keeps verifying"
    )
    rotate.add_argument(
        "--keep", type=int, default=2, help="older keys kept besides the one replaced"
    )
    rotate.set_defaults(func=_jwt_rotate)
    return parser


def _jwt_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """Rotate the data dir's signing key (the embedded default). Only files change: no
    database or NATS is needed, and running API processes pick the key up on restart."""
    from infrastructure.security import data_dir_keys, key_id, rotate_data_dir_key

    if settings.jwt_secret:
        print(
            "norn: NORN_JWT_SECRET is set, so the signing key comes from the environment and "
            "the data dir's key is not used. To rotate: set NORN_JWT_SECRET to a new key "
            "(at least 32 bytes), put the old one in NORN_JWT_PREVIOUS_SECRETS "
            "(comma-separated) so the tokens it signed keep working until they expire, "
            "and restart every API process.",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.keep <= 100:
        print("norn: --keep must be between 0 and 100", file=sys.stderr)
        return 2
    new_kid = rotate_data_dir_key(settings.data_dir, keep=args.keep)
    still_verifying = [key_id(key) for key in data_dir_keys(settings.data_dir)[1:]]
    print(f"new JWT signing key: kid {new_kid} (in {settings.data_dir})")
    print(f"previous keys still verifying: {', '.join(still_verifying)}")
    print("restart every running API process (norn serve / norn api) to sign with the new key")
    return 0


def _run_http(settings: Settings, roles: set[str]) -> int:
    import uvicorn

    from api.app import create_app
    from api.bootstrap import bootstrap_admin, build_container, start_servers
    from domain.errors import InvalidCommand

    servers = start_servers(settings)
    container = build_container(settings, servers.database_url, servers.nats_url)
    try:
        try:
            bootstrap_admin(container)
        except InvalidCommand as error:
            print(f"norn: cannot create the bootstrap admin: {error}", file=sys.stderr)
            return 2
        app = create_app(container, roles)
        print(
            f"Norn listening on http://{settings.host}:{settings.port} (docs: /schema)", flush=True
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; with the
        # default handlers that would kill the process before the embedded servers stop.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            log_config=None,  # uvicorn's lines go through ours (NORN_LOG_FORMAT)
            lifespan="on",
            # Open SSE streams never end by themselves: give them a moment, then close.
            timeout_graceful_shutdown=3,
            # The client address (login throttling) from X-Forwarded-For, but only when
            # a trusted reverse proxy sent it.
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    finally:
        container.close()
        servers.stop()
    return 0


def _run_roles(settings: Settings, roles: set[str]) -> int:
    from api.bootstrap import Roles, build_container, start_servers

    async def run() -> None:
        servers = start_servers(settings)
        container = build_container(settings, servers.database_url, servers.nats_url)
        background = Roles(container, roles)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await container.read_pool.open()
        metrics_server = None
        if settings.metrics_port is not None:
            # These roles serve no HTTP: their metrics get a port of their own.
            from infrastructure.metrics_server import serve_metrics

            metrics_server = serve_metrics(
                settings.host,
                settings.metrics_port,
                container.metrics.registry,
                settings.metrics_token,
            )
            log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        try:
            await background.start()
            await stop.wait()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            await background.stop()
            await container.read_pool.close()
            container.close()
            servers.stop()

    asyncio.run(run())
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers

    servers = start_servers(settings, run_migrations=False)
    try:
        from infrastructure.migrations import migrate

        applied = migrate(servers.database_url)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    finally:
        servers.stop()
    return 0


def _projection_status(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers
    from projections import ALL_PROJECTIONS, projection_status

    servers = start_servers(settings)
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


def _projection_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers
    from projections import ALL_PROJECTIONS, rebuild

    by_name = {p.name: p for p in ALL_PROJECTIONS}
    if args.name not in by_name:
        print(
            f"norn: unknown projection {args.name!r}; one of {', '.join(by_name)}", file=sys.stderr
        )
        return 2

    def progress(done: int, total: int) -> None:
        print(f"\rrebuilding {args.name}: {done}/{total}", end="", flush=True)

    servers = start_servers(settings)
    try:
        asyncio.run(rebuild(by_name[args.name], servers.database_url, progress))
        print(f"\nrebuilt {args.name}")
    finally:
        servers.stop()
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build_container, start_servers
    from application.principal import system_principal
    from domain.events import CommandContext

    password = getpass.getpass("password: ")
    servers = start_servers(settings)
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


def _events_tail(settings: Settings, args: argparse.Namespace) -> int:
    """Follow the event store's notification log (the source of truth), printing each
    event as its CloudEvents envelope, one JSON object per line."""
    import psycopg

    from api.bootstrap import start_servers
    from infrastructure.envelope import encode, to_cloud_event
    from infrastructure.notification_log import max_position, read_notifications

    async def tail(database_url: str) -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            position = (
                args.from_position if args.from_position is not None else await max_position(conn)
            )
            while True:
                batch = await read_notifications(conn, position, 500)
                for notification in batch:
                    sys.stdout.write(encode(to_cloud_event(notification)).decode() + "\n")
                    position = notification.id
                sys.stdout.flush()
                if not batch:
                    await asyncio.sleep(0.5)

    servers = start_servers(settings)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(tail(servers.database_url))
    finally:
        servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
