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
