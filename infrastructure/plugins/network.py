"""Outbound HTTP for plugins, guarded against reaching private networks (SSRF).

The guard sits in the connection layer, not in front of the request: every TCP
connection httpx opens (the first request and every redirect) goes through
`GuardedBackend.connect_tcp`, which resolves the host name once, checks each address,
and connects to that very address. There is no window between the check and the
connect in which DNS could answer differently (DNS rebinding), and TLS still verifies
the certificate against the URL's host name. NORN_ALLOW_PRIVATE_NETWORKS=1 (the step
context's `allow_private_networks`) turns the check off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from infrastructure.plugins.base import PluginError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
USER_AGENT = "norn-plugins"
ERROR_BODY_CHARS = 300  # of a non-2xx response's body, quoted in the step's error


class BlockedAddress(PluginError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def address_problem(address: IPAddress) -> str | None:
    """Why a plugin may not connect to `address` (e.g. 'loopback'), or None if it may."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_problem(embedded)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for label, matches in checks:
        if matches:
            return label
    if not address.is_global:  # e.g. 100.64.0.0/10, shared by carrier-grade NAT
        return "not globally routable"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, refusing addresses that are not public."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        allowed = addresses
        if not self._allow_private:
            refused = [(a, address_problem(a)) for a in addresses]
            allowed = [a for a, problem in refused if problem is None]
            if not allowed:
                address, problem = refused[0]
                raise BlockedAddress(
                    f"refusing to connect to {host} ({address} is {problem}); "
                    "plugins reach only public addresses unless "
                    "NORN_ALLOW_PRIVATE_NETWORKS=1"
                )
        last_error: Exception | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def _resolve(self, host: str, port: int, seconds: float | None) -> list[IPAddress]:
        try:
            addresses = await resolve_addresses(host, port, seconds)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from None
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("plugins may not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(
    *, allow_private: bool, timeout: float, follow_redirects: bool = False
) -> httpx.AsyncClient:
    """An httpx client whose every connection passes the guard. Proxy variables from the
    environment are ignored (trust_env=False): a proxy would be the address connected to,
    and the guard could not see where requests really go."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx does not take a network backend; the pool is rebuilt with the guarded one.
    # tests/unit/plugins/test_network.py fails if an httpx upgrade bypasses it.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=10,
        network_backend=GuardedBackend(allow_private=allow_private),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=follow_redirects,
        max_redirects=5,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


async def resolve_addresses(host: str, port: int, seconds: float | None) -> list[IPAddress]:
    """The host's addresses (an address as written is its own), de-duplicated, in the
    resolver's order; TimeoutError or OSError when it cannot say. The guards of the HTTP
    and database plugins check each before connecting to it."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def url_hosts(url: str) -> list[str]:
    """The URL's host and port (the scheme's when it names none), lower case, as a
    one-element list (none if it has no host): a step's destination, for secrets'
    allowed_hosts."""
    parts = urlsplit(url)
    if not parts.hostname:
        return []
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port the schema let through but no URL can have
        return [parts.hostname.lower()]
    return [host_port(parts.hostname, port)]


def host_port(host: str, port: int) -> str:
    """host:port, an IPv6 address in brackets, lower case."""
    host = host.lower().strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def display_url(url: str | httpx.URL) -> str:
    """The URL for messages and logs: without credentials or query (they may hold keys)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def transport_error(action: str, url: str, error: httpx.HTTPError) -> PluginError:
    """A PluginError for an httpx failure: timeouts and connection failures may pass."""
    where = display_url(url)
    if isinstance(error, httpx.TimeoutException):
        return PluginError(f"{action} {where} timed out ({type(error).__name__})")
    if isinstance(error, httpx.TooManyRedirects):
        return PluginError(f"{action} {where}: too many redirects", retryable=False)
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return PluginError(f"{action} {where}: {error}", retryable=False)
    return PluginError(f"{action} {where} failed: {error or type(error).__name__}")


async def status_error(action: str, url: str, response: httpx.Response) -> PluginError:
    """A PluginError for a non-2xx response, quoting the start of its body (read no
    further). 5xx, 408 and 429 may pass on a retry; other statuses will not."""
    received = b""
    try:
        async for chunk in response.aiter_bytes():
            received += chunk
            if len(received) >= ERROR_BODY_CHARS:
                break
    except httpx.HTTPError:
        pass
    text = " ".join(received[:ERROR_BODY_CHARS].decode("utf-8", "replace").split())
    status = response.status_code
    message = f"{action} {display_url(url)} answered {status} {response.reason_phrase}"
    return PluginError(
        f"{message}: {text}" if text else message,
        retryable=status >= 500 or status in (408, 429),
    )
