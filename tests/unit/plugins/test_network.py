"""The network guard: which addresses plugins may reach, checked on the address actually
connected to. Refused connections are refused before any packet is sent, so these tests
name private addresses without sending traffic to them."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpx
import pytest

from infrastructure.plugins import network
from infrastructure.plugins.network import (
    BlockedAddress,
    address_problem,
    display_url,
    guarded_client,
)
from tests.unit.plugins.helpers import LocalServer, Reply


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address to refuse, not to bind)
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::", "loopback"),
    ],
)
def test_addresses_plugins_may_not_reach(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_fine(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


async def get(url: str, *, allow_private: bool, **kwargs: Any) -> httpx.Response:
    async with guarded_client(allow_private=allow_private, timeout=5, **kwargs) as client:
        return await client.get(url)


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Answer getaddrinfo for the given names; record every name asked."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        if host in answers:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_the_guard_refuses_loopback_before_connecting(server: LocalServer, host: str) -> None:
    server.routes["/"] = lambda request: Reply(200, b"{}")

    with pytest.raises(BlockedAddress, match="NORN_ALLOW_PRIVATE_NETWORKS=1") as refused:
        await get(server.url("/", host=host), allow_private=False)

    assert refused.value.retryable is False
    assert server.requests == []


@pytest.mark.parametrize("address", ["10.20.30.40", "169.254.169.254", "192.168.0.10"])
async def test_a_name_resolving_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    fake_dns(monkeypatch, {"internal.example.test": [address]})

    with pytest.raises(BlockedAddress, match=f"internal.example.test \\({address} is"):
        await get("http://internal.example.test/", allow_private=False)


async def test_the_connection_goes_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch, server: LocalServer
) -> None:
    """DNS is asked once per connection and the socket opens to that answer, so a name
    cannot pass the check with one address and connect to another (DNS rebinding)."""
    asked = fake_dns(monkeypatch, {"service.example.test": ["127.0.0.1"]})
    server.routes["/"] = lambda request: Reply(200, b"{}")

    response = await get(server.url("/", host="service.example.test"), allow_private=True)

    assert response.status_code == 200
    assert asked == ["service.example.test"]
    assert server.requests[0].headers["host"] == f"service.example.test:{server.port}"


async def test_redirects_pass_the_guard_too(
    monkeypatch: pytest.MonkeyPatch, server: LocalServer
) -> None:
    # Let 127.0.0.1 pass as if it were public, so the first hop connects and the
    # redirect to another loopback address is what the guard sees.
    real = network.address_problem
    monkeypatch.setattr(
        network,
        "address_problem",
        lambda a: None if str(a) == "127.0.0.1" else real(a),
    )
    target = f"http://127.0.0.2:{server.port}/secret"
    server.routes["/hop"] = lambda request: Reply(302, headers={"Location": target})

    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.2 is loopback"):
        await get(server.url("/hop"), allow_private=False, follow_redirects=True)

    assert [r.path for r in server.requests] == ["/hop"]


async def test_allowing_private_networks_lets_local_requests_through(
    server: LocalServer,
) -> None:
    server.routes["/"] = lambda request: Reply(200, b'{"ok": true}')

    response = await get(server.url("/"), allow_private=True)

    assert response.json() == {"ok": True}


async def test_proxy_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch, server: LocalServer
) -> None:
    # A proxy would be the address connected to, hiding the real target from the guard.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    server.routes["/"] = lambda request: Reply(200, b"{}")

    response = await get(server.url("/"), allow_private=True)

    assert response.status_code == 200


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    with pytest.raises(httpx.ConnectError, match="cannot resolve"):
        await get("http://no-such-host.invalid/", allow_private=False)


def test_urls_in_messages_lose_credentials_and_query() -> None:
    assert (
        display_url("https://user:pw@api.example.test:8443/v1/items?api_key=s3cret#x")
        == "https://api.example.test:8443/v1/items"
    )
    assert display_url("http://[::1]:80/a") == "http://[::1]:80/a"
