"""What Input.postgres and Output.postgres share: the connection fields of their configs
(the same names a tenant connection of type postgres fills in), opening a connection
through the guard (postgres_guard.py), and turning psycopg's errors into PluginErrors.

libpq reads settings the config leaves out from the executor's environment (PGPASSWORD,
~/.pgpass); a plugin must never send Norn's credentials to a server a pipeline names, so
the password is always given (empty without one) and the password file is one that does
not exist (in the run's workspace; /dev/null would make libpq warn on every connect).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import msgspec
import psycopg

from infrastructure.plugins.base import PluginError, StepContext
from infrastructure.plugins.network import host_port
from infrastructure.plugins.postgres_guard import Endpoint, endpoints, host_problem
from infrastructure.plugins.schema import StepConfig
from infrastructure.plugins.sensitive import SecretText, SensitiveText

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
DatabaseName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
ConnectSeconds = Annotated[
    float, msgspec.Meta(gt=0, le=300, description="Seconds allowed to resolve and connect.")
]
APPLICATION_NAME = "norn"
NO_PASSFILE = ".no-pgpass"  # never created
# SQLSTATE classes worth a retry: connection, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention, system error, lock wait.
_RETRYABLE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})


class PostgresConnection(StepConfig, kw_only=True):
    """The connection fields of the database plugins' configs."""

    host: SecretText
    port: Port = 5432
    database: DatabaseName
    user: SecretText
    password: SensitiveText | None = None
    sslmode: SslMode = "prefer"
    connect_timeout: ConnectSeconds = 10.0


def connection_problems(config: Any) -> list[str]:
    problem = host_problem(config.host)
    return [f"config.host: {problem}"] if problem else []


def connection_hosts(config: Any) -> list[str]:
    """The server as host:port, for secrets' allowed_hosts."""
    return [host_port(config.host, config.port)]


def connection_kwargs(config: Any, endpoint: Endpoint, context: StepContext) -> dict[str, Any]:
    """libpq parameters for one attempt: to the checked address, nothing left for the
    environment to fill in that could carry Norn's own credentials."""
    kwargs: dict[str, Any] = {
        "host": endpoint.host.strip("[]") if endpoint.hostaddr else endpoint.host,
        "port": config.port,
        "dbname": config.database,
        "user": config.user,
        "password": config.password or "",
        "passfile": str(context.workspace / NO_PASSFILE),
        "sslmode": config.sslmode,
        # libpq counts whole seconds and treats less than 2 as 2.
        "connect_timeout": max(2, math.ceil(config.connect_timeout)),
        "application_name": APPLICATION_NAME,
    }
    if endpoint.hostaddr:
        kwargs["hostaddr"] = endpoint.hostaddr
    return kwargs


@asynccontextmanager
async def connect(config: Any, context: StepContext) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection to the configured database (not in autocommit). Leaving the block
    closes it without committing: whatever the step did not commit is rolled back."""
    places = await endpoints(
        config.host, config.port, config.database, context, config.connect_timeout
    )
    failure: psycopg.Error | None = None
    connection = None
    for place in places:
        try:
            async with asyncio.timeout(config.connect_timeout + 1):
                connection = await psycopg.AsyncConnection.connect(
                    **connection_kwargs(config, place, context)
                )
            break
        except psycopg.Error as error:
            failure = error
        except TimeoutError:
            failure = psycopg.OperationalError(f"connecting to {config.host} timed out")
    if connection is None:
        assert failure is not None
        raise database_error(f"connecting to {_where(config)}", failure, config)
    try:
        yield connection
    finally:
        await connection.close()


def _where(config: Any) -> str:
    host = config.host if ":" not in config.host else f"[{config.host.strip('[]')}]"
    return f"{host}:{config.port}/{config.database}"


def database_error(action: str, error: psycopg.Error, config: Any) -> PluginError:
    """A PluginError for a psycopg error: the server's message (and detail, and where a
    COPY failed), its SQLSTATE, never the password."""
    diag = error.diag
    text = diag.message_primary or str(error) or type(error).__name__
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.context and diag.context.startswith("COPY "):
        text += f" at {diag.context.splitlines()[0]}"
    state = error.sqlstate
    if state:
        text += f" [SQLSTATE {state}]"
        retryable = state[:2] in _RETRYABLE_CLASSES
    else:
        retryable = isinstance(error, psycopg.OperationalError)
    message = f"{action}: {' '.join(text.split())}"
    if config.password:
        message = message.replace(config.password, "***")
    return PluginError(message, retryable=retryable)
