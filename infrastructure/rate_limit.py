"""Per-principal request rate limits: a token bucket per principal, decided in memory in
each API process and shared between processes through PostgreSQL
(infrastructure/rate_limit_sync.py does the sharing; this module does no I/O).

A bucket holds at most `burst` tokens and refills at `per_hour` tokens an hour: a client
may send `burst` requests at once, and `per_hour` in any hour on average.

Each process keeps, per principal, a view of the bucket: the level the shared bucket last
confirmed to it, less the requests it admitted since, refilled over time like any bucket;
and how many of those requests the shared bucket has not confirmed yet ("unconfirmed").
It admits while its view holds a token; what other processes took meanwhile it learns at
its next sync of that bucket. So that this cannot over-admit much, a process admits at
most MAX_UNCONFIRMED requests of one principal beyond what the shared bucket last
confirmed: past that the request waits for a sync. Hence the bound: a principal may
exceed its burst by at most MAX_UNCONFIRMED requests per API process.

Why it holds (for a burst, with no refill meanwhile): let c be the last change of the
shared bucket that left it holding a token (or its initial, full state). A process
admits only while its view holds a token, and its view never exceeds the level it last
confirmed (a process new to the principal: a full one, confirmed before c), so once it
confirms a level after c it admits nothing more. The requests it admitted that c does
not include were all unconfirmed at one moment (just before that confirmation, or now):
at most MAX_UNCONFIRMED. Everything c includes fits in the burst. The shared level may
go negative for that reason: the debt is kept and refilled like any level, so the
over-admission is paid back rather than forgotten.

A busy principal would make every process sync every SYNC_SOON requests: a statement on
one hot row per few requests. So a sync also *reserves* tokens for the principal's next
interval (twice what its rate in this process since the previous sync takes in one, once
that is SYNC_SOON or more): the shared bucket hands over at most half of what it holds,
takes them off its level at once, and the process admits from its reservation with
nothing to confirm. Reserved tokens are taken before they are used, never after, so they
add nothing to the bound; what a process did not use it gives back at its next sync (it
syncs while it holds any), and a failed sync forfeits what it was giving back rather
than risk counting it twice. A grant is made from a level that does not know of the
requests the process admitted while the sync was out, so it pays for those first. A
plan change applies to a reservation at once: its tokens go into the view, which the
new burst caps, and back at the next sync."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_UNCONFIRMED = 10
"""Requests of one principal a process may admit beyond what the shared bucket last
confirmed to it; the most a principal can exceed its burst by, per API process."""

SYNC_INTERVAL = 0.1
"""Seconds between syncs while requests come in (infrastructure/rate_limit_sync.py)."""

SYNC_SOON = 5
"""Unconfirmed requests of one principal that make the process sync now rather than at
its next interval, so that a busy principal rarely has to wait at MAX_UNCONFIRMED."""


@dataclass(frozen=True)
class RateLimit:
    per_hour: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_hour / 3600.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    """Requests per hour."""
    remaining: int
    """Requests that may be sent right now."""
    reset_after: int
    """Seconds until a request is allowed again (0 while one is allowed now): what
    X-RateLimit-Reset says."""
    retry_after: int
    """Seconds until the next request is allowed (0 when it is now)."""


@dataclass(frozen=True)
class Change:
    """What a sync tells the shared bucket of one principal: `taken` tokens, under the
    limit of its latest request."""

    key: str
    taken: int
    limit: RateLimit
    want: int = 0
    """Tokens to reserve for this process (the shared bucket grants what it can spare)."""
    back: int = 0
    """Reserved tokens this process gives back unused."""


class _Bucket:
    __slots__ = (
        "in_flight",
        "level",
        "level_at",
        "limit",
        "recent",
        "recent_since",
        "reserved",
        "returning",
        "unsynced",
    )

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        # A principal this process has not seen is taken to have a full bucket: no round
        # trip to find out, and at worst MAX_UNCONFIRMED too many before the first sync.
        self.level = float(limit.burst)
        """The view at `level_at`: the level last confirmed, less what this process took
        since (refilled like any bucket in between)."""
        self.level_at = now
        self.in_flight = 0
        """Admitted, sent to the shared bucket, not confirmed yet."""
        self.unsynced = 0
        """Admitted, not sent yet."""
        self.reserved = 0
        """Tokens the shared bucket has already counted as this process's: admitting on
        one needs no confirmation. Not part of `level`."""
        self.recent = 0
        """Admitted since `recent_since` (either way): the rate a reservation is sized on."""
        self.recent_since = now
        self.returning = 0
        """Reserved tokens no longer held (the limit changed): in the view now, and given
        back to the shared bucket at the next sync."""

    @property
    def unconfirmed(self) -> int:
        return self.in_flight + self.unsynced

    def refilled(self, now: float) -> float:
        """The view now: refilled since `level_at` (a debt too), up to the burst."""
        elapsed = max(0.0, now - self.level_at)
        return min(float(self.limit.burst), self.level + self.limit.per_second * elapsed)


def _admitted(limit: RateLimit, tokens: float, reserved: int) -> RateDecision:
    """An admitted request's decision: `tokens` left in the view after it, `reserved` still
    held by this process."""
    left = max(0, math.floor(tokens)) + reserved
    return RateDecision(
        allowed=True,
        limit=limit.per_hour,
        remaining=left,
        reset_after=0 if left >= 1 else max(1, math.ceil((1 - tokens) / limit.per_second)),
        retry_after=0,
    )


class LocalBuckets:
    """One process's view of every principal's bucket. `clock` is monotonic seconds."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, interval: float = SYNC_INTERVAL
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._buckets: dict[str, _Bucket] = {}
        self._unsynced: set[str] = set()  # so that an idle sync tick looks at nothing
        self._in_flight: list[str] = []
        self.urgent = False
        """Some principal has SYNC_SOON unconfirmed requests: sync without waiting."""

    def decide(self, key: str, limit: RateLimit) -> RateDecision | None:
        """Admit (taking a token) or refuse a request; None when this process may not
        decide before the shared bucket confirms more of the principal's requests."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, now)
        elif limit != bucket.limit:  # a plan change applies from the next request on
            self._limit_changed(key, bucket, limit)
        tokens = bucket.refilled(now)
        rate = limit.per_second
        if bucket.reserved > 0:
            bucket.reserved -= 1
            bucket.recent += 1
            self._unsynced.add(key)  # the next sync resizes the reservation
            return _admitted(limit, tokens, bucket.reserved)
        if tokens < 1:
            # Refusing needs no confirmation: other processes can only have taken more.
            return RateDecision(
                allowed=False,
                limit=limit.per_hour,
                remaining=0,
                reset_after=max(1, math.ceil((1 - tokens) / rate)),
                retry_after=max(1, math.ceil((1 - tokens) / rate)),
            )
        if bucket.unconfirmed >= MAX_UNCONFIRMED:
            return None
        tokens -= 1
        bucket.level, bucket.level_at = tokens, now
        bucket.unsynced += 1
        bucket.recent += 1
        self._unsynced.add(key)
        if bucket.unconfirmed >= SYNC_SOON:
            self.urgent = True
        return _admitted(limit, tokens, 0)

    def _limit_changed(self, key: str, bucket: _Bucket, limit: RateLimit) -> None:
        """A reservation was made under the old limit: its tokens go into the view, which
        the new burst caps, and back to the shared bucket at the next sync."""
        bucket.limit = limit
        if bucket.reserved:
            bucket.level += bucket.reserved
            bucket.returning += bucket.reserved
            bucket.reserved = 0
            self._unsynced.add(key)

    def has_unsynced(self) -> bool:
        return bool(self._unsynced)

    def take_changes(self, *, give_back: bool = False) -> list[Change]:
        """The requests admitted since the last sync, now in flight, and the reservation
        each principal needs for the next interval (`give_back`: none, on stopping). The
        caller must `confirm` or `abandon` them before taking again."""
        assert not self._in_flight, "the previous sync is not settled"
        now = self._clock()
        changes: list[Change] = []
        for key in sorted(self._unsynced):
            bucket = self._buckets[key]
            want, back = (0, bucket.reserved) if give_back else self._reservation(bucket, now)
            bucket.reserved -= back
            back, bucket.returning = back + bucket.returning, 0
            changes.append(Change(key, bucket.unsynced, bucket.limit, want=want, back=back))
            bucket.in_flight, bucket.unsynced = bucket.unsynced, 0
            bucket.recent, bucket.recent_since = 0, now
            self._in_flight.append(key)
        self._unsynced.clear()
        self.urgent = False
        return changes

    def _reservation(self, bucket: _Bucket, now: float) -> tuple[int, int]:
        """What to reserve and what to give back: twice what the principal's rate here
        since the last sync takes in an interval, if that is SYNC_SOON or more (less would
        not have made the process sync early). The rate is never taken over less than an
        interval (a few requests at once are not a busy principal), and a sync that comes
        early (its reservation ran out, or another principal made it urgent) gives
        nothing back: sized on that short stretch it would give back most of what it
        holds, run out the sooner and come early again."""
        elapsed = now - bucket.recent_since
        per_interval = bucket.recent * self._interval / max(elapsed, self._interval)
        need = 0
        if round(per_interval, 6) >= SYNC_SOON:  # round: float noise
            need = min(bucket.limit.burst, math.ceil(2 * per_interval))
        early = elapsed < self._interval
        return max(0, need - bucket.reserved), 0 if early else max(0, bucket.reserved - need)

    def confirm(self, levels: dict[str, float], granted: dict[str, int] | None = None) -> None:
        """The shared levels after the sync of what was in flight (every process's
        requests that reached it so far, this one's in flight included; every
        reservation taken off), and the tokens reserved for this process."""
        now = self._clock()
        for key in self._in_flight:
            bucket = self._buckets[key]
            if key in levels:
                # What was admitted after the sync was sent is not in the shared level.
                bucket.level, bucket.level_at = levels[key] - bucket.unsynced, now
                bucket.in_flight = 0
                bucket.reserved += (granted or {}).get(key, 0)
                if bucket.level < 0 and bucket.reserved and bucket.unsynced:
                    # Admitted while the sync was out, past what the shared bucket had
                    # left when it granted (it did not know of them): the grant pays for
                    # them first, and they are not sent as taken again.
                    paid = min(bucket.reserved, bucket.unsynced, math.ceil(-bucket.level))
                    bucket.reserved -= paid
                    bucket.unsynced -= paid
                    bucket.level += paid
            else:  # not answered for: as good as not sent
                self._put_back(key, bucket)
            if bucket.reserved:  # synced again while it holds any: unused, it goes back
                self._unsynced.add(key)
        self._in_flight.clear()

    def abandon(self) -> None:
        """The sync failed: what was in flight is sent again with the next one. (If the
        failed statement did commit after all, those requests count twice: that can only
        refuse sooner, never admit more. For that reason the reserved tokens it gave
        back stay given back, and nothing it asked for is reserved.)"""
        for key in self._in_flight:
            self._put_back(key, self._buckets[key])
        self._in_flight.clear()

    def _put_back(self, key: str, bucket: _Bucket) -> None:
        bucket.unsynced += bucket.in_flight
        bucket.in_flight = 0
        self._unsynced.add(key)
        if bucket.unconfirmed >= SYNC_SOON:
            self.urgent = True

    def forget_full(self) -> int:
        """Drop what this process knows of buckets that are full by its view and have
        nothing unconfirmed: a principal it has not seen is taken to be full anyway, so
        forgetting them changes no decision and bounds the memory to the active ones."""
        now = self._clock()
        full = [
            key
            for key, bucket in self._buckets.items()
            if not bucket.unconfirmed
            and not bucket.reserved
            and not bucket.returning
            and bucket.refilled(now) >= bucket.limit.burst
        ]
        for key in full:
            del self._buckets[key]
        return len(full)

    def unconfirmed(self, key: str) -> int:
        bucket = self._buckets.get(key)
        return bucket.unconfirmed if bucket else 0

    def __len__(self) -> int:
        return len(self._buckets)
