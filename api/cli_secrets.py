"""`norn secrets rotate-key` (README "Secrets"): a new master key for tenant secrets,
and every data key re-wrapped by it. The values are not touched: re-wrapping the data
keys is all a master key rotation needs. One-shot, PostgreSQL only."""

from __future__ import annotations

import argparse

from api.cli_commands import announce_for_command
from api.cli_support import CliError
from infrastructure.settings import Settings


def secrets_rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    from psycopg_pool import ConnectionPool

    from api.bootstrap import start_servers
    from infrastructure.secret_store import (
        MasterKeys,
        keep_one_previous_master_key,
        rewrap_all,
        rotate_data_dir_master_key,
    )

    if settings.secret_key:
        # The keys come from the environment: the operator made the new one.
        keys = [settings.secret_key, *settings.previous_secret_keys]
        print("NORN_SECRET_KEY is set: re-wrapping every data key with it")
    else:
        keys = rotate_data_dir_master_key(settings.data_dir)
        print(f"new master key in {settings.data_dir}; the previous ones kept until done")
    master = MasterKeys(keys)
    servers = start_servers(settings, nats=False, announce=announce_for_command)
    try:
        with ConnectionPool(servers.database_url, min_size=1, max_size=2) as pool:
            done, unreadable = rewrap_all(pool, master)
    finally:
        servers.stop()
    print(f"re-wrapped {done} data key(s) with master key {master.current_id}")
    if unreadable:
        raise CliError(
            f"{unreadable} data key(s) are wrapped by a master key not configured: add it to "
            "NORN_SECRET_PREVIOUS_KEYS (or the data dir's secrets.previous) and run again",
            1,
        )
    if not settings.secret_key:
        keep_one_previous_master_key(settings.data_dir)
    print(
        "restart every Norn process to use the new key; "
        + (
            "then NORN_SECRET_PREVIOUS_KEYS may be emptied once no process runs with the old key"
            if settings.secret_key
            else "the key replaced stays in secrets.previous until the next rotation"
        )
    )
    return 0


def secrets_shred_plaintext(settings: Settings, args: argparse.Namespace) -> int:
    """Rewrite the stored events (and purge the NATS stream's messages) that hold
    credentials in clear (infrastructure/shredding.py). Norn's other processes may go
    on running: the events it appends bring their in-memory copies into line."""
    import asyncio

    from api.bootstrap import build_container, start_servers
    from domain.events import CommandContext
    from infrastructure import nats as norn_nats
    from infrastructure.shredding import purge_stream, shred_stored_credentials

    servers = start_servers(settings, announce=announce_for_command)
    try:
        container = build_container(settings, servers.database_url, servers.nats_url)
        ctx = CommandContext("system:shredder", "shred-plaintext")
        try:
            with container.sync_pool.connection() as conn:
                report = shred_stored_credentials(conn, container.store, ctx)
        finally:
            container.close()

        async def purge() -> int:
            nc = await asyncio.wait_for(norn_nats.connect(servers.nats_url, "norn-shred"), 30)
            try:
                return await purge_stream(nc.jetstream(), settings.nats_stream, report.values)
            finally:
                await nc.close()

        report.nats_messages_deleted = asyncio.run(purge())
    finally:
        servers.stop()
    print(
        f"{len(report.values)} credential value(s) held in clear shredded:"
        f" {report.events_rewritten} stored event(s) rewritten in {report.pipelines}"
        f" pipeline(s) and {report.runs} run(s), {report.read_model_rows} read-model row(s)"
        f" masked, {report.idempotency_answers} stored answer(s) dropped,"
        f" {report.nats_messages_deleted} NATS message(s) deleted"
    )
    return 0
