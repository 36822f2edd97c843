"""Where the database plugins may connect: the private-network guard applied to database
servers, and the refusal of Norn's own database. Refusals happen before any connection
is attempted, so these tests name addresses without sending traffic to them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from infrastructure.plugins.base import PluginError, ProtectedDatabase
from infrastructure.plugins.network import BlockedAddress
from infrastructure.plugins.postgres_guard import (
    THIS_MACHINE,
    Endpoint,
    endpoints,
    machine_key,
    protected_databases,
)
from tests.unit.plugins.helpers import make_context

PUBLIC = "93.184.216.34"
ANY = "0.0.0.0"  # noqa: S104 (an address that reaches this machine, not one to bind)
NORN = (ProtectedDatabase("127.0.0.1", 5432, "norn"),)


async def where(tmp_path: Path, host: str, port: int = 5432, database: str = "app", **context):
    return await endpoints(host, port, database, make_context(tmp_path, **context), 5)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "::1", "[::1]", "10.0.0.7", "169.254.169.254", "::"]
)
async def test_loopback_private_and_link_local_servers_are_refused(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(BlockedAddress, match="NORN_ALLOW_PRIVATE_NETWORKS=1"):
        await where(tmp_path, host)


@pytest.mark.parametrize("host", ["/var/run/postgresql", "@pg", ""])
async def test_unix_sockets_are_refused_without_the_allowance(tmp_path: Path, host: str) -> None:
    with pytest.raises(BlockedAddress, match="Unix socket"):
        await where(tmp_path, host)


async def test_the_allowance_opens_loopback_and_unix_sockets(tmp_path: Path) -> None:
    assert await where(tmp_path, "127.0.0.1", allow_private_networks=True) == [
        Endpoint("127.0.0.1", "127.0.0.1")
    ]
    assert await where(tmp_path, "/var/run/postgresql", allow_private_networks=True) == [
        Endpoint("/var/run/postgresql", None)
    ]


async def test_a_public_address_is_connected_to_as_resolved(tmp_path: Path) -> None:
    assert await where(tmp_path, PUBLIC) == [Endpoint(PUBLIC, PUBLIC)]


async def test_a_host_list_or_spaces_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="one server"):
        await where(tmp_path, "a.example,b.example")
    with pytest.raises(PluginError, match="spaces"):
        await where(tmp_path, "a.example hostaddr=10.0.0.1")


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1", "127.0.0.2", ANY]
)
async def test_norns_own_database_is_refused_by_any_name_of_this_machine(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(PluginError, match="Norn's own database") as refused:
        await where(
            tmp_path, host, database="norn", allow_private_networks=True, protected_databases=NORN
        )
    assert not isinstance(refused.value, BlockedAddress)
    assert refused.value.retryable is False


async def test_a_unix_socket_to_norns_own_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="Norn's own database"):
        await where(
            tmp_path,
            "/var/run/postgresql",
            database="norn",
            allow_private_networks=True,
            protected_databases=NORN,
        )
    on_socket = (ProtectedDatabase("/var/run/postgresql", 5432, "norn"),)
    with pytest.raises(PluginError, match="Norn's own database"):
        await where(
            tmp_path,
            "localhost",
            database="norn",
            allow_private_networks=True,
            protected_databases=on_socket,
        )


async def test_other_databases_and_ports_of_the_same_server_are_reachable(
    tmp_path: Path,
) -> None:
    for database, port in (("app", 5432), ("norn", 5433), ("Norn", 5432)):
        found = await where(
            tmp_path,
            "localhost",
            port,
            database,
            allow_private_networks=True,
            protected_databases=NORN,
        )
        assert found and all(e.host == "localhost" for e in found)


def test_every_local_address_is_this_machine() -> None:
    for text in ("127.0.0.1", "127.1.2.3", "::1", ANY, "::ffff:127.0.0.1"):
        assert machine_key(ipaddress.ip_address(text)) == THIS_MACHINE
    assert machine_key(ipaddress.ip_address(PUBLIC)) == PUBLIC


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://norn@db.example:6543/norn", [("db.example", 6543, "norn")]),
        ("postgresql://postgres@127.0.0.1/events", [("127.0.0.1", 5432, "events")]),
        ("host=/var/run/postgresql dbname=n", [("/var/run/postgresql", 5432, "n")]),
        (
            "postgresql://u@a:1,b:2/n",
            [("a", 1, "n"), ("b", 2, "n")],
        ),
        ("host=db hostaddr=10.0.0.5 dbname=n", [("db", 5432, "n"), ("10.0.0.5", 5432, "n")]),
        ("postgresql://u@h", [("h", 5432, "u")]),  # libpq: the database defaults to the user
    ],
)
def test_norns_database_is_read_from_its_url(
    url: str, expected: list[tuple[str, int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"):
        monkeypatch.delenv(name, raising=False)
    assert protected_databases(url) == tuple(ProtectedDatabase(*e) for e in expected)


def test_the_environment_fills_what_the_url_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "pg.internal")
    monkeypatch.setenv("PGPORT", "6000")
    monkeypatch.setenv("PGDATABASE", "norn_prod")
    assert protected_databases("postgresql://") == (
        ProtectedDatabase("pg.internal", 6000, "norn_prod"),
    )
    assert protected_databases(None) == ()
