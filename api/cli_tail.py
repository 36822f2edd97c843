"""`norn events tail`: the event store followed from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from api.cli_commands import announce_for_command
from api.cli_support import CliError, error_summary, say
from infrastructure.settings import Settings

RECONNECT_FOR = 30.0
"""Seconds `events tail` tries to reconnect after losing PostgreSQL before giving up."""


def events_tail(settings: Settings, args: argparse.Namespace) -> int:
    """Follow the event store's notification log (the source of truth), printing each
    event as its CloudEvents envelope, one JSON object per line."""
    from api.bootstrap import start_servers

    servers = start_servers(settings, nats=False, announce=announce_for_command)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_tail(servers.database_url, args.from_position))
    finally:
        servers.stop()
    return 0


async def _tail(database_url: str, from_position: int | None) -> None:
    import psycopg

    from infrastructure.envelope import encode, to_cloud_event
    from infrastructure.notification_log import max_position, read_notifications

    position = from_position
    lost_since: float | None = None
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                database_url,
                autocommit=True,
                connect_timeout=5,
                application_name="norn events tail",  # for pg_stat_activity
            ) as conn:
                if lost_since is not None:
                    say(f"reconnected; going on after position {position}")
                    lost_since = None
                if position is None:
                    position = await max_position(conn)
                while True:
                    batch = await read_notifications(conn, position, 500)
                    for notification in batch:
                        sys.stdout.write(encode(to_cloud_event(notification)).decode() + "\n")
                        position = notification.id
                    sys.stdout.flush()
                    if not batch:
                        await asyncio.sleep(0.5)
        except psycopg.OperationalError as error:
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                say(f"lost the database connection ({error_summary(error)}); reconnecting")
            elif now - lost_since > RECONNECT_FOR:
                resume = f" (resume with --from {position})" if position is not None else ""
                raise CliError(
                    f"the database has been unreachable for {RECONNECT_FOR:.0f}s: "
                    f"{error_summary(error)}{resume}"
                ) from None
            await asyncio.sleep(1.0)
