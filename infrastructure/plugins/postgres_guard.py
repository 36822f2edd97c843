"""Where the database plugins (Input.postgres, Output.postgres) may connect.

The rule of the HTTP plugins (network.py's `address_problem`), applied to a database
server: the host is resolved once, every address is checked, and libpq connects to a
checked address (`hostaddr`; `host` stays the name, for TLS verification), so DNS cannot
answer differently between the check and the connect. Unix sockets are local: refused
like loopback unless NORN_ALLOW_PRIVATE_NETWORKS=1.

Whatever the allowance, Norn's own database is refused (StepContext.protected_databases,
from the executor's database URL): same server, same port, same database name. Both
sides are resolved when the step connects and compared by address, every address of
this machine counting as one host, so `localhost`, 127.0.0.1, ::1, a Unix socket and
this machine's own interface addresses all name the same server.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict

from infrastructure.plugins.base import PluginError, ProtectedDatabase, StepContext
from infrastructure.plugins.network import (
    BlockedAddress,
    IPAddress,
    address_problem,
    resolve_addresses,
)

THIS_MACHINE = "this machine"
_ALLOWANCE = "unless NORN_ALLOW_PRIVATE_NETWORKS=1"


@dataclass(frozen=True)
class Endpoint:
    """Where libpq connects: `host` as configured, `hostaddr` the checked address it
    must use (None for a Unix socket, whose `host` is the directory)."""

    host: str
    hostaddr: str | None


def is_unix_socket(host: str) -> bool:
    """libpq reads an empty host, a path or an @abstract name as a Unix socket."""
    return not host or host.startswith(("/", "@"))


def host_problem(host: str) -> str | None:
    """Why `host` is not one host libpq would read as given (a list, spaces...)."""
    if "," in host:
        return "host must name one server, not a comma-separated list"
    if any(c.isspace() or c == "\0" for c in host):
        return "host may not contain spaces or control characters"
    return None


async def endpoints(
    host: str, port: int, database: str, context: StepContext, seconds: float
) -> list[Endpoint]:
    """The places this step may connect to for `host:port/database`, in order, or a
    PluginError saying why none."""
    if problem := host_problem(host):
        raise PluginError(f"config.host: {problem}", retryable=False)
    if is_unix_socket(host):
        if not context.allow_private_networks:
            raise BlockedAddress(f"refusing to connect to a Unix socket; {_ALLOWANCE}")
        await _refuse_protected({THIS_MACHINE}, port, database, context, seconds)
        return [Endpoint(host, None)]
    addresses = await resolve(host, port, seconds)
    keys = {host.lower().strip("[]")} | {machine_key(a) for a in addresses}
    await _refuse_protected(keys, port, database, context, seconds)
    allowed = addresses
    if not context.allow_private_networks:
        refused = [(a, address_problem(a)) for a in addresses]
        allowed = [a for a, problem in refused if problem is None]
        if not allowed:
            address, problem = refused[0]
            raise BlockedAddress(
                f"refusing to connect to {host} ({address} is {problem}); database "
                f"plugins reach only public addresses {_ALLOWANCE}"
            )
    return [Endpoint(host, str(a)) for a in allowed]


async def resolve(host: str, port: int, seconds: float) -> list[IPAddress]:
    """The host's addresses (an address as written is its own), de-duplicated."""
    try:
        addresses = await resolve_addresses(host, port, seconds)
    except TimeoutError:
        raise PluginError(f"resolving {host} timed out") from None
    except OSError as error:
        raise PluginError(f"cannot resolve {host}: {error.strerror or error}") from None
    if not addresses:
        raise PluginError(f"cannot resolve {host}")
    return addresses


def machine_key(address: IPAddress) -> str:
    """What identifies the server at `address`: THIS_MACHINE for loopback, the
    unspecified address (which reaches this machine) and this machine's own addresses;
    the address itself otherwise."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or _is_own_address(address):
        return THIS_MACHINE
    return str(address)


def _is_own_address(address: IPAddress) -> bool:
    """Whether an interface of this machine holds `address`: binding a socket to an
    address only succeeds for one's own (no packet is sent)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


async def _refuse_protected(
    keys: set[str], port: int, database: str, context: StepContext, seconds: float
) -> None:
    for protected in context.protected_databases:
        if protected.port != port or protected.database != database:
            continue
        if keys & await _server_keys(protected.host, protected.port, seconds):
            raise PluginError(
                f"refusing to connect to database {database!r}: it is Norn's own database",
                retryable=False,
            )


async def _server_keys(host: str, port: int, seconds: float) -> set[str]:
    if is_unix_socket(host):
        return {THIS_MACHINE}
    keys = {host.lower().strip("[]")}
    try:
        addresses = await resolve(host, port, seconds)
    except PluginError:
        return keys  # the name still matches itself
    return keys | {machine_key(a) for a in addresses}


def protected_databases(database_url: str | None) -> tuple[ProtectedDatabase, ...]:
    """Norn's own database, read from its URL the way libpq would (the PG* environment
    and defaults filling what the URL leaves out), one entry per host it may use."""
    if not database_url:
        return ()
    info = conninfo_to_dict(database_url)
    env = os.environ
    user = info.get("user") or env.get("PGUSER") or _login_name()
    database = str(info.get("dbname") or env.get("PGDATABASE") or user)
    hosts = str(info.get("host") or env.get("PGHOST") or "").split(",")
    addrs = [a for a in str(info.get("hostaddr") or env.get("PGHOSTADDR") or "").split(",") if a]
    ports = [int(p or 5432) for p in str(info.get("port") or env.get("PGPORT") or "").split(",")]
    found: list[ProtectedDatabase] = []
    # hostaddr's entries pair with host's, and so do the ports (one port serves all).
    for names in (hosts, addrs):
        for i, host in enumerate(names):
            port = ports[i] if len(ports) > 1 and i < len(ports) else ports[0]
            found.append(ProtectedDatabase(host, port, database))
    return tuple(found)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
