"""`norn info`: the API, PostgreSQL and NATS this configuration uses, and whether they
answer. It starts nothing: the data dir's files say what embedded servers run."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from api.cli_support import error_summary, redact_url
from infrastructure.embedded import EmbeddedStatus, nats_status, postgres_status
from infrastructure.embedded_state import port_answers
from infrastructure.settings import Settings


def info(settings: Settings, args: argparse.Namespace) -> int:
    from api.cli import norn_version

    probe_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
    listening = port_answers(settings.port, probe_host)
    lines = [
        f"norn {norn_version()}",
        f"API: http://{settings.host}:{settings.port}"
        + (" (listening)" if listening else " (nothing listening)"),
    ]
    if settings.database_url:
        lines.append(f"PostgreSQL: {redact_url(settings.database_url)}")
        lines.append(f"  from NORN_DATABASE_URL; {_postgres_answers(settings.database_url)}")
    else:
        lines += _embedded(settings, "PostgreSQL", postgres_status(settings.data_dir), "postgres")
    if settings.nats_url:
        lines.append(f"NATS: {redact_url(settings.nats_url)}")
        lines.append(f"  from NORN_NATS_URL; {_nats_answers(settings.nats_url)}")
    else:
        lines += _embedded(settings, "NATS", nats_status(settings.data_dir), "nats")
    lines.append(f"data dir: {settings.data_dir.resolve()}")
    print("\n".join(lines))
    return 0


def _embedded(settings: Settings, name: str, status: EmbeddedStatus, directory: str) -> list[str]:
    where = settings.data_dir / directory
    if not status.running:
        lines = [f"{name}: embedded, not running (data in {where})"]
        if status.url:
            lines.append(f"  next start: {status.url}")
        return lines
    users = ", ".join(map(str, status.users)) or "none"
    return [
        f"{name}: {redact_url(status.url or '?')}",
        f"  embedded, running (pid {status.pid}; used by pids {users}; data in {where})",
    ]


def _postgres_answers(url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, application_name="norn info"):
            return "answering"
    except psycopg.Error as error:
        return f"not answering: {error_summary(error)}"


def _nats_answers(url: str) -> str:
    """Whether the first server of the URL accepts a connection (TCP only: enough to
    tell a wrong address or a stopped server)."""
    first = url.split(",")[0].strip()
    if "://" not in first:
        first = f"nats://{first}"
    try:
        parts = urlsplit(first)
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    except ValueError:
        return "not a URL"
    return "answering" if port_answers(port, host, timeout=2) else "not answering"
