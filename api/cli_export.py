"""`norn events export`: one tenant's events, as NDJSON CloudEvents on stdout, in
position order (README "Audit trail"). One-shot, PostgreSQL only: it reads the audit
read model's index, then what it has not projected yet from the store itself
(projections/audit_queries.py `tenant_events`), in batches, so memory stays flat however
long the history. A progress line goes to stderr, only when stderr is a terminal: a
redirected stderr stays clean for scripts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import TextIO
from uuid import UUID

from api.cli_commands import announce_for_command
from api.cli_support import ProgressLine
from infrastructure.settings import Settings

BATCH = 1000


def events_export(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import start_servers

    servers = start_servers(settings, nats=False, announce=announce_for_command)
    try:
        asyncio.run(
            export(
                servers.database_url, args.tenant, args.since, args.until, sys.stdout, sys.stderr
            )
        )
    finally:
        servers.stop()
    return 0


async def export(
    database_url: str,
    tenant: str,
    since: datetime | None,
    until: datetime | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Write the events; return how many."""
    import psycopg

    from infrastructure.envelope import encode
    from projections.audit_queries import tenant_events

    progress = ProgressLine(f"exporting tenant {tenant}", err) if err.isatty() else None
    written = 0
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, application_name="norn events export"
    ) as conn:
        try:
            async for batch in tenant_events(conn, tenant, since, until, BATCH):
                out.write("".join(encode(event).decode() + "\n" for event in batch.events))
                out.flush()
                written += len(batch.events)
                if progress is not None:
                    progress.update(batch.done, batch.total)
        finally:
            if progress is not None:
                progress.finish()
    return written


def tenant_id(raw: str) -> str:
    """--tenant: a tenant's id, in the canonical form its events carry."""
    try:
        return str(UUID(raw))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a tenant id (a UUID): {raw!r}") from None


def moment(raw: str) -> datetime:
    """--since/--until: an RFC 3339 time with its offset."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {raw!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"the time needs an offset (Z or +hh:mm): {raw!r}")
    return value
