"""Idempotency keys in PostgreSQL, so that a retried write returns the first response
instead of doing the work twice, across any number of API processes.

A key is reserved before the request runs (an INSERT that only one request can win),
completed with the response once it succeeded, or released when it failed. Reservations
carry a short lease that the request renews while it runs: one left behind by a process
that died is taken over by the next retry within the lease (5 s). Taking a key over keeps
its generation (`created_at`), from which the command derives the ids of what it creates
(application/idempotency.py): whatever the dead attempt appended is found, not made again.
A request that answered a server error leaves its key to be taken over the same way (it
may have appended before failing); one that answered a client error frees it. Keys
expire after a TTL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Reservation:
    """What a request found for its key: `won` (run it), `stored` (replay it),
    `mismatch` (the key was used for another request), or none of these (in flight).
    A won key has its `generation`; `taken_over`: from an earlier attempt that died or
    answered a server error, and so may have acted."""

    won: bool = False
    stored: StoredResponse | None = None
    mismatch: bool = False
    generation: datetime | None = None
    taken_over: bool = False


_RESERVE = """
INSERT INTO idempotency_keys AS k (principal, key, fingerprint, lease_until)
VALUES (%(principal)s, %(key)s, %(fingerprint)s, now() + %(lease)s)
ON CONFLICT (principal, key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, status = NULL, headers = NULL, body = NULL,
       created_at = CASE WHEN k.created_at < now() - %(ttl)s THEN now() ELSE k.created_at END,
       lease_until = EXCLUDED.lease_until
 WHERE k.created_at < now() - %(ttl)s
    OR (k.status IS NULL AND k.fingerprint = EXCLUDED.fingerprint
        AND (k.lease_until IS NULL OR k.lease_until < now()))
RETURNING k.created_at, k.created_at < now() AS taken_over
"""
"""Wins a new key, an expired one (a new generation), or one whose request died (its
lease ran out) or failed on the server's side (lease_until NULL, status NULL): those keep
their generation."""


class IdempotencyStore:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        ttl: timedelta = timedelta(hours=24),
        lease: timedelta = timedelta(seconds=5),
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._lease = lease
        self._last_purge = 0.0

    async def reserve(self, principal: str, key: str, fingerprint: bytes) -> Reservation:
        params = {
            "principal": principal,
            "key": key,
            "fingerprint": fingerprint,
            "lease": self._lease,
            "ttl": self._ttl,
        }
        row = None
        for _ in range(3):  # a release between the two statements frees the key: retry
            async with self._pool.connection() as conn:
                won = await (await conn.execute(_RESERVE, params)).fetchone()
                if won:
                    return Reservation(won=True, generation=won[0], taken_over=won[1])
                row = await (
                    await conn.execute(
                        "SELECT fingerprint, status, headers, body FROM idempotency_keys"
                        " WHERE principal = %s AND key = %s",
                        (principal, key),
                    )
                ).fetchone()
            if row is not None:
                break
        if row is None:
            return Reservation()
        stored_fingerprint, status, headers, body = row
        if bytes(stored_fingerprint) != fingerprint:
            return Reservation(mismatch=True)
        if status is None:
            return Reservation()
        pairs = [(str(name), str(value)) for name, value in headers]
        return Reservation(stored=StoredResponse(status, pairs, bytes(body)))

    async def complete(self, principal: str, key: str, response: StoredResponse) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET status = %s, headers = %s, body = %s,"
                " lease_until = NULL WHERE principal = %s AND key = %s",
                (
                    response.status,
                    msgspec.json.encode(response.headers).decode(),
                    response.body,
                    principal,
                    key,
                ),
            )
        await self._purge_now_and_then()

    @property
    def lease(self) -> timedelta:
        return self._lease

    async def renew(self, principal: str, key: str, generation: datetime) -> None:
        """Keep the lease of a request that is still running."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET lease_until = now() + %s"
                " WHERE principal = %s AND key = %s AND created_at = %s AND status IS NULL"
                " AND lease_until IS NOT NULL",
                (self._lease, principal, key, generation),
            )

    async def release(self, principal: str, key: str, *, may_have_acted: bool = False) -> None:
        """Free the key after a failed request: at once after a client error (nothing was
        done), or, when the request may have acted before it failed (a server error),
        for a retry of the same request to take over with the same generation."""
        async with self._pool.connection() as conn:
            if may_have_acted:
                await conn.execute(
                    "UPDATE idempotency_keys SET lease_until = NULL"
                    " WHERE principal = %s AND key = %s AND status IS NULL",
                    (principal, key),
                )
                return
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE principal = %s AND key = %s AND status IS NULL",
                (principal, key),
            )

    async def _purge_now_and_then(self) -> None:
        """Expired keys would otherwise accumulate; one process-local clock is enough to
        keep the table small (several processes purging is harmless)."""
        if time.monotonic() - self._last_purge < 600:
            return
        self._last_purge = time.monotonic()
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - %s", (self._ttl,)
            )
