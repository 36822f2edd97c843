"""The notifier role (`norn notifier`, also inside `norn serve`): delivers events to
webhooks, at least once (README "Webhooks", docs/architecture.md "Webhooks").

Two supervised loops, any number of notifiers at once, no leader:

- *fan-out* reads the event store in position order (the precise horizon, so it never
  passes an event the relay could still publish) and, per batch, moves the webhooks'
  routes, inserts a delivery per (matching webhook, event) and moves its position in one
  transaction on the tracking row (infrastructure/webhook_deliveries.py);
- *delivery* claims due deliveries (FOR UPDATE SKIP LOCKED, with a lease instead of a
  held transaction, so a slow receiver holds no lock), POSTs each through the plugins'
  SSRF guard, and records the outcome: 2xx delivered; else retried after a jittered
  backoff until the retry window after the first attempt, then dead. A notifier killed
  mid-attempt leaves its claims to come due again when their lease ends: a second
  attempt with the same X-Norn-Delivery id, never a lost delivery.

A webhook whose attempts fail `disable_after` times in a row is disabled by an event
(WebhookService.disable, the system principal).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

from application.threads import in_thread
from application.webhooks import WebhookSecrets, WebhookService
from infrastructure.notification_log import max_position
from infrastructure.plugins.base import PluginError
from infrastructure.plugins.network import address_problem, display_url, guarded_client
from infrastructure.supervision import Backoff, pause, supervise
from infrastructure.webhook_deliveries import Due, claim, record, seconds_to_next_due
from infrastructure.webhook_fanout import fan_out
from infrastructure.webhook_protocol import PING_TYPE, RetryPolicy, headers, succeeded

log = logging.getLogger(__name__)

IDLE_REST = 1.0
"""Longest rest of the delivery loop while nothing is due (it used to claim every
interval, ten times a second, with nothing to claim)."""

Observe = Callable[[str, float | None], None]
"""(outcome: delivered | failed | dead, seconds from the event to its delivery)."""


class NotifierRole:
    def __init__(
        self,
        database_url: str,
        webhooks: WebhookService,
        secrets: WebhookSecrets,
        *,
        allow_private_networks: bool = False,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        batch: int = 500,
        concurrency: int = 32,
        per_webhook: int = 8,
        interval: float = 0.1,
        observe: Observe | None = None,
    ) -> None:
        self._database_url = database_url
        self._webhooks = webhooks
        self._secrets = secrets
        self._allow_private = allow_private_networks
        self.policy = policy or RetryPolicy()
        self._timeout = timeout
        self._batch = batch
        self._concurrency = concurrency
        self._per_webhook = per_webhook
        """Attempts of one webhook in flight at once, at most (about): the other slots
        stay for the others."""
        self._interval = interval
        self._observe = observe
        self._due = asyncio.Event()
        """Set by fan-out when it inserted deliveries: the delivery loop looks at once."""
        self._secret_cache: dict[UUID, str] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            supervise(
                "notifier: fan-out",
                lambda: self._fan_out(stop),
                stop=stop,
                backoff=Backoff(first=0.5, cap=5.0),
                quiet=(psycopg.OperationalError,),
                logger=log,
            ),
            supervise(
                "notifier: delivery",
                lambda: self._deliver(stop),
                stop=stop,
                backoff=Backoff(first=0.5, cap=5.0),
                quiet=(psycopg.OperationalError,),
                logger=log,
            ),
        )

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self._database_url, autocommit=True)

    async def _fan_out(self, stop: asyncio.Event) -> None:
        # The newest position when a pass left the notifier's position there: while no
        # event is newer there is nothing to fan out, and an idle notifier asks only for
        # the newest position (not for its row and the events below the precise horizon,
        # ten times a second).
        caught_up: int | None = None
        async with await self._connect() as conn:
            while not stop.is_set():
                newest = await max_position(conn)
                if newest == caught_up:
                    await pause(stop, self._interval)
                    continue
                passed, position, queued = await fan_out(conn, self._batch)
                caught_up = newest if position == newest else None
                if queued:  # wake the delivery loop only for something to deliver
                    self._due.set()
                if passed < self._batch:
                    await pause(stop, self._interval)

    async def _deliver(self, stop: asyncio.Event) -> None:
        """Up to `concurrency` attempts in flight, each recorded as soon as it ends: a slow
        receiver holds its own slots, not a batch of everyone's deliveries."""
        lease = self._timeout * 3 + 5
        running: set[asyncio.Task[None]] = set()
        in_flight: Counter[UUID] = Counter()
        pool = AsyncConnectionPool(
            self._database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        async with pool, self._client() as client:
            try:
                while not stop.is_set():
                    free = self._concurrency - len(running)
                    claimed: list[Due] = []
                    if free > 0:
                        self._due.clear()
                        busy = [w for w, n in in_flight.items() if n >= self._per_webhook]
                        async with pool.connection() as conn:
                            claimed = await claim(
                                conn,
                                free,
                                lease,
                                self.policy.window,
                                per_webhook=self._per_webhook,
                                busy=busy,
                            )
                    for due in claimed:
                        in_flight[due.webhook_id] += 1
                        task = asyncio.create_task(self._deliver_one(pool, client, due))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        task.add_done_callback(lambda _, w=due.webhook_id: _settled(in_flight, w))
                    if free > 0 and len(claimed) == free:
                        continue  # more may be due: claim again at once
                    rest = self._interval if claimed else await self._until_due(pool)
                    waiter = asyncio.ensure_future(self._due.wait())
                    try:  # a slot freed, new deliveries, the rest, or the stop
                        await pause(stop, rest, waiter, *running)
                    finally:
                        waiter.cancel()
            finally:
                # Attempts under way finish and are recorded (within the role's grace);
                # one cut short is attempted again when its lease ends.
                await asyncio.gather(*running, return_exceptions=True)

    async def _until_due(self, pool: AsyncConnectionPool) -> float:
        """How long the delivery loop may rest when it claimed nothing: until the earliest
        delivery falls due, at least the interval and at most IDLE_REST. Deliveries of
        this notifier's fan-out wake it at once; a ping or a redelivery queued by an API
        waits at most IDLE_REST."""
        async with pool.connection() as conn:
            seconds = await seconds_to_next_due(conn)
        if seconds is None:
            return IDLE_REST
        return min(IDLE_REST, max(self._interval, seconds))

    async def _deliver_one(
        self, pool: AsyncConnectionPool, client: httpx.AsyncClient, due: Due
    ) -> None:
        try:
            outcome = await self._attempt(client, due)
            async with pool.connection() as conn:
                await self._record(conn, due, *outcome)
        except Exception:  # its lease brings it back: the loop goes on with the others
            log.warning("webhook delivery %s not recorded", due.id, exc_info=True)

    def _client(self) -> httpx.AsyncClient:
        client = guarded_client(allow_private=self._allow_private, timeout=self._timeout)
        client.headers["User-Agent"] = "norn-webhooks"
        return client

    async def _attempt(
        self, client: httpx.AsyncClient, due: Due
    ) -> tuple[int | None, int, str | None]:
        """(status code, milliseconds, error or None) of one POST."""
        started = time.monotonic()
        secret = await self._secret(due.webhook_id)
        if secret is None:
            return None, 0, "the webhook's signing secret cannot be read (server key changed?)"
        sent = headers(secret, due.id, due.event_type, due.body, time.time())
        try:
            response = await client.post(due.url, content=due.body, headers=sent)
        except (httpx.HTTPError, PluginError) as error:
            message = f"POST {display_url(due.url)}: {str(error) or type(error).__name__}"
            return None, _ms(started), message
        code = response.status_code
        if succeeded(code):
            return code, _ms(started), None
        return code, _ms(started), f"answered {code} {response.reason_phrase}"

    async def _secret(self, webhook_id: UUID) -> str | None:
        # Secrets never change for a webhook id (no rotation): cached for the process.
        secret = self._secret_cache.get(webhook_id)
        if secret is None:
            secret = await in_thread(self._secrets.get, webhook_id)
            if secret is not None:
                self._secret_cache[webhook_id] = secret
        return secret

    async def _record(
        self,
        conn: psycopg.AsyncConnection,
        due: Due,
        code: int | None,
        ms: int,
        error: str | None,
    ) -> None:
        retry_in = self.policy.delay(due.attempts)
        status, streak = await record(
            conn, due, status_code=code, duration_ms=ms, error=error, retry_in=retry_in
        )
        latency = None
        if error is None and due.event_type != PING_TYPE:
            latency = max(0.0, (datetime.now(UTC) - due.event_time).total_seconds())
        self._observed(status, latency)
        if error is not None:
            log.debug("webhook %s: delivery %s failed: %s", due.webhook_id, due.id, error)
        if streak is not None:
            failures, active = streak
            if active and failures >= self.policy.disable_after:
                reason = f"{self.policy.disable_after} consecutive failed deliveries"
                try:
                    await in_thread(self._webhooks.disable, due.webhook_id, reason)
                except Exception:  # e.g. a concurrent change: the next failure asks again
                    log.warning("webhook %s: disabling failed", due.webhook_id, exc_info=True)
                else:
                    log.warning("webhook %s disabled: %s", due.webhook_id, reason)

    def _observed(self, outcome: str, latency: float | None) -> None:
        if self._observe is not None:
            self._observe(outcome, latency)


def _settled(in_flight: Counter[UUID], webhook_id: UUID) -> None:
    in_flight[webhook_id] -= 1
    if in_flight[webhook_id] <= 0:
        del in_flight[webhook_id]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def url_problem(allow_private: bool) -> Callable[[str], str | None]:
    """The SSRF guard at creation (application/webhooks.py UrlProblem): why the URL's
    host may not be delivered to, or None. Each delivery checks again, on the address it
    connects to (infrastructure/plugins/network.py), so a name that resolves elsewhere
    later is caught then."""

    def problem(url: str) -> str | None:
        if allow_private:
            return None
        host = urlsplit(url).hostname or ""
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:  # UnicodeError: not a valid IDNA name
            return f"cannot resolve {host}: {getattr(error, 'strerror', None) or error}"
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            reason = address_problem(address)
            if reason is not None:
                return (
                    f"{host} resolves to {address}, which is {reason}: webhooks reach only "
                    "public addresses unless NORN_ALLOW_PRIVATE_NETWORKS=1"
                )
        return None

    return problem
