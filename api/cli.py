"""The `norn` command: serve (every role, from one command), one role per process for
scaling out, and operator tools. The commands themselves are in api/cli_commands.py;
here: the arguments, and turning a user's mistake or an unreachable server into one
`norn: ...` line on stderr instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from api import cli_commands as commands
from api.cli_export import events_export, moment, tenant_id
from api.cli_info import info
from api.cli_mcp import mcp
from api.cli_secrets import secrets_rotate_key, secrets_shred_plaintext
from api.cli_support import CliError, error_summary, redact_url
from api.cli_tail import events_tail
from infrastructure.settings import Settings, SettingsError

log = logging.getLogger("norn")

EMBEDDED_NOTE = (
    "With NORN_DATABASE_URL unset it uses the data dir's embedded PostgreSQL: the one "
    "running (started by `norn serve` or another command), which it leaves running, or "
    "else one it starts for its own run and says so on stderr. It needs no NATS."
)


def norn_version() -> str:
    try:
        return version("norn")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a bad argument: usage and exit 2, no traceback
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"norn: configuration error: {error}", file=sys.stderr)
        return 2
    from infrastructure.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if settings.log_level.upper() != "DEBUG":
        # pgserver logs initdb's whole output at INFO: it would bury what matters (the
        # first start's admin password among it).
        logging.getLogger("pgserver").setLevel(logging.WARNING)
    # platformdirs warns that XDG_RUNTIME_DIR is unset (pgserver's lock falls back to
    # /tmp): nothing an operator needs to act on.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
    # SIGTERM ends a command as Ctrl-C does, through its clean-up: it lets go of the
    # embedded servers (serve and the roles install their own handlers).
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`norn events tail | head`): that is the end, not an
        # error. Point stdout at /dev/null so the interpreter's last flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as error:
        print(f"norn: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        message = user_error(error, settings)
        if message is None:
            raise  # a bug: the traceback is what helps
        print(f"norn: {message}", file=sys.stderr)
        log.debug("details", exc_info=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def user_error(error: BaseException, settings: Settings) -> str | None:
    """One line for a failure that is the environment's or the user's, not Norn's."""
    import psycopg

    from application.errors import ApplicationError
    from domain.errors import DomainError
    from infrastructure.embedded import EmbeddedError
    from projections.rebuild import RebuildError

    if isinstance(error, psycopg.OperationalError):
        where = redact_url(settings.database_url) if settings.database_url else "embedded"
        return f"cannot use PostgreSQL ({where}): {error_summary(error)}"
    if isinstance(error, EmbeddedError):
        return f"embedded server: {error}"
    if isinstance(error, DomainError | ApplicationError | RebuildError):
        return str(error)
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror or error}: {error.filename}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="norn",
        description="Norn, an event-sourced control plane for data pipelines. "
        "Configuration comes from NORN_* environment variables (see the README).",
        epilog="Run `norn COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"norn {norn_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, func: object, details: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=f"{help_}. {details}".strip())
        p.set_defaults(func=func)
        return p

    command(
        "serve",
        "run the API and every background role (the API in NORN_HTTP_WORKERS processes "
        "of its own; with 0, in this one beside the roles)",
        commands.serve,
        "Listens on NORN_HOST:NORN_PORT (checked first: a busy port fails at once). "
        "With no NORN_DATABASE_URL / NORN_NATS_URL it runs embedded PostgreSQL and NATS "
        "under NORN_DATA_DIR (or uses the ones already running there).",
    )
    command("api", "run the HTTP API only", commands.api)
    command("relay", "run the outbox relay (event store to NATS)", commands.relay)
    command("projector", "run the projections (read models)", commands.projector)
    command("executor", "execute runs, competing with other executors", commands.executor)
    command(
        "scheduler",
        "fire scheduled jobs (run as many as you like: they share the jobs)",
        commands.scheduler,
    )
    command(
        "notifier",
        "deliver events to webhooks (run as many as you like: they share the deliveries)",
        commands.notifier,
    )
    command("migrate", "apply database migrations", commands.migrate, EMBEDDED_NOTE)
    command(
        "info",
        "show the API, PostgreSQL and NATS this configuration uses",
        info,
        "Passwords are hidden. Starts nothing: it reports whether the embedded servers "
        "run, under which pid and for which processes.",
    )

    command(
        "mcp",
        "serve Norn's MCP tools over stdin and stdout, as the API key in NORN_API_KEY",
        mcp,
        'For an MCP client that starts it (README "MCP server"); over HTTP, the API '
        "serves the same tools at /mcp. " + EMBEDDED_NOTE,
    )

    proj = sub.add_parser(
        "projections", help="projection status and rebuild", description=EMBEDDED_NOTE
    )
    proj_sub = proj.add_subparsers(dest="action", required=True, metavar="ACTION")
    proj_sub.add_parser(
        "status",
        help="each projection's position, the store's head and the lag",
        description="Each projection's position, the store's head and the lag. " + EMBEDDED_NOTE,
    ).set_defaults(func=commands.projection_status)
    rebuild = proj_sub.add_parser(
        "rebuild",
        help="rebuild a projection from the event store and swap it in",
        description="Rebuild a projection's tables from position 0 beside the live ones, "
        "then swap them in; queries keep being answered meanwhile. " + EMBEDDED_NOTE,
    )
    rebuild.add_argument("name", help="the projection (see `norn projections status`)")
    rebuild.set_defaults(func=commands.projection_rebuild)

    users = sub.add_parser("users", help="user administration", description=EMBEDDED_NOTE)
    users_sub = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = users_sub.add_parser(
        "create",
        help="create a user (asks for the password)",
        description="Create a user; the password is asked for on the terminal. " + EMBEDDED_NOTE,
    )
    create.add_argument("username", help="the new user's login name")
    create.add_argument(
        "--tenant", default=None, help="the user's tenant id (omit for a platform admin)"
    )
    create.add_argument(
        "--role",
        action="append",
        dest="roles",
        metavar="ROLE",
        help="a role to grant; repeatable (default: platform_admin without --tenant, "
        "viewer with it)",
    )
    create.set_defaults(func=commands.create_user)

    events = sub.add_parser("events", help="the event stream", description=EMBEDDED_NOTE)
    events_sub = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = events_sub.add_parser(
        "tail",
        help="print events (CloudEvents JSON, one a line) as they happen",
        description="Follow the event store and print each event as its CloudEvents JSON "
        "envelope, one a line, until interrupted. " + EMBEDDED_NOTE,
    )
    tail.add_argument(
        "--from",
        dest="from_position",
        type=_position,
        default=None,
        metavar="POSITION",
        help="print the events after this position first (default: only new events)",
    )
    tail.set_defaults(func=events_tail)
    export = events_sub.add_parser(
        "export",
        help="write one tenant's events (CloudEvents JSON, one a line) in position order",
        description="Write every event of a tenant as its CloudEvents JSON envelope, one a "
        "line, in position order, to stdout; a progress line on stderr when it is a "
        "terminal. " + EMBEDDED_NOTE,
    )
    export.add_argument("--tenant", required=True, type=tenant_id, help="the tenant's id")
    export.add_argument(
        "--since",
        type=moment,
        default=None,
        metavar="TIME",
        help="only events at or after this RFC 3339 time (e.g. 2026-01-01T00:00:00Z)",
    )
    export.add_argument(
        "--until",
        type=moment,
        default=None,
        metavar="TIME",
        help="only events before this RFC 3339 time",
    )
    export.set_defaults(func=events_export)

    jwt_ = sub.add_parser(
        "jwt",
        help="JWT signing keys",
        description="The data dir's JWT signing keys (unused when NORN_JWT_SECRET is set).",
    )
    jwt_sub = jwt_.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = jwt_sub.add_parser(
        "rotate",
        help="new signing key in the data dir; the old one keeps verifying",
        description="Make a new signing key in the data dir; the old ones keep verifying "
        "the tokens they signed. Restart the API processes to sign with it.",
    )
    rotate.add_argument(
        "--keep",
        type=int,
        default=2,
        metavar="N",
        help="older keys kept besides the one replaced (0 to 100; default 2)",
    )
    rotate.set_defaults(func=commands.jwt_rotate)

    secrets_ = sub.add_parser(
        "secrets", help="tenant secrets' master key", description=EMBEDDED_NOTE
    )
    secrets_sub = secrets_.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate_key = secrets_sub.add_parser(
        "rotate-key",
        help="new master key; every data key re-wrapped by it (values untouched)",
        description="Re-wrap every secret's data key with a new master key: the data "
        "dir's (a new one is made, the old kept until done), or NORN_SECRET_KEY when set "
        "(set the new key there and the old one in NORN_SECRET_PREVIOUS_KEYS first). "
        "Restart every Norn process afterwards.",
    )
    rotate_key.set_defaults(func=secrets_rotate_key)
    shred = secrets_sub.add_parser(
        "shred-plaintext",
        help="remove credentials stored in clear in step configs from every stored event",
        description="Credentials given in clear in step configs before secret references "
        "(a webhook's secret, an Authorization header) are rewritten as redacted in every "
        "stored event, masked in read models, and their NATS messages deleted: the one "
        "deliberate exception to the event store's immutability. Runs of a revision "
        "whose value was shredded fail until the pipeline is revised with a secret "
        "reference. Other Norn processes may keep running.",
    )
    shred.set_defaults(func=secrets_shred_plaintext)
    return parser


def _position(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a position: {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a position is 0 or more")
    return value


if __name__ == "__main__":
    sys.exit(main())
