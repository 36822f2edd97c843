"""Quota enforcement on write-side facts: a command that adds to a counted resource takes
from this process's shard of the tenant's usage (domain/usage.py: an escrow of free
units the main Usage aggregate allotted to it) and saves the shard in the same atomic
append as its own events; one that removes releases into the shard the same way. The
event store's unique (originator_id, originator_version) is then the only arbiter: two
commands that both saw the last free unit cannot both be saved, in one process or in
several.

Within a process, the commands of one tenant's resource take turns on its shard (a lock
held from the decision until the command's events are handed over for the next append,
which stores every batch handed over meanwhile together: application/group_commit.py)
and the shard is kept between them, so a warm command reads nothing to decide. Other
processes take from other shards, so they do not race on a take. A shard short of free
units is refilled from the main usage in a bookkeeping append of its own (`_refill`);
when the main has too little left, every shard's free units are reclaimed into it in
that append, and the decision is exact. A kept copy made stale anyway (two processes on
one shard) fails its append: the copy is dropped and the command is tried again
(`retry_on_conflict`). Commands of different tenants never wait for each other.

Usage is counted once per tenant and resource (and period), when its main aggregate
starts, from the read model plus the unprojected events (projections/usage.py, exact):
that start is itself an event, so two starts cannot both count.
"""

from __future__ import annotations

import os
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application import group_commit, unit_of_work
from application.conflicts import CONFLICT_ATTEMPTS, pause_after
from application.errors import QuotaExceeded, VersionConflict
from application.event_store import NornEventStore
from application.ports import Usage as UsageCounts
from domain.errors import ShardShort
from domain.events import CommandContext
from domain.tenant import Tenant
from domain.usage import SHARDS, Usage, UsageShard, shard_id, usage_id

QUOTA_RESOURCES: dict[str, str] = {
    "max_pipelines": "pipelines",
    "max_jobs": "jobs",
    "max_deployments": "deployments",
    "max_concurrent_runs": "running_runs",
    "max_runs_per_day": "runs_today",
}
"""Which counted resource (projections/usage.py) each quota limits."""

PER_DAY = frozenset({"runs_today"})
"""Resources counted afresh each UTC day: one Usage aggregate per day."""

GRANT_SPARE_MAX = 1000
GRANT_SPARE_SHARE = 4
"""A shard short of units is allotted what the take needs plus a quarter of what the
main has left beyond it, at most GRANT_SPARE_MAX: a busy process refills once per
thousand takes, and near the limit, where a spare unit would sit in one process while
another asks, it is allotted little more than it needs. A refill holds the shard's turn
over a read and an append of the main usage, which every process's refills contend on:
at 100, two HTTP workers creating 600 pipelines a second each refilled 12 times a
second between them, and creates' p99 was 45-161 ms against 36-41 ms at 1,000."""

KEPT_MAX = 10_000
"""Usage aggregates a process keeps between commands (one per busy tenant resource)."""


def period_of(resource: str, now: datetime | None = None) -> str:
    if resource not in PER_DAY:
        return ""
    return (now or datetime.now(UTC)).date().isoformat()


class _UsageKey:
    """What a process holds for one usage aggregate: the turn commands take on it, the
    queue their appends go through, and the copy the last of them left (with the epoch
    of the queue it was made in)."""

    __slots__ = ("epoch", "kept", "queue", "turn")

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.queue = group_commit.CommitQueue()
        self.kept: UsageShard | None = None
        self.epoch = 0

    @property
    def idle(self) -> bool:
        return not self.turn.locked() and self.queue.idle

    def take_kept(self) -> UsageShard | None:
        """The copy, if no failed append has made it stale since; no longer kept."""
        usage, self.kept = self.kept, None
        return usage if usage is not None and self.epoch == self.queue.epoch else None

    def keep(self, usage: UsageShard, epoch: int) -> None:
        self.kept, self.epoch = usage, epoch


def _decided(
    shard: UsageShard,
    decide: Callable[[UsageShard], None],
    refill: Callable[[UsageShard], UsageShard] | None,
) -> UsageShard:
    """The shard once `decide` took from it: refilled first if it was short (a release,
    with no `refill`, is never short)."""
    try:
        decide(shard)
    except ShardShort:
        if refill is None:
            raise
        shard = refill(shard)
        decide(shard)
    return shard


SHARD_ENV = "NORN_USAGE_SHARD"
"""Set by `norn serve` for each HTTP worker it starts (api/http_workers.py): the shard
after its own, so that its processes never share one (by hash, two did one time in 16)."""


def process_shard(host: str | None = None, pid: int | None = None) -> int:
    """This process's usage shard: the one `norn serve` gave it, else from its host name
    and process id, so that processes of one machine and containers that all run Norn as
    pid 1 (each with a host name of its own) mostly differ. Two that share one only
    race, as every process did before shards."""
    given = os.environ.get(SHARD_ENV)
    if given is not None and host is None and pid is None:
        if not given.isdigit() or int(given) >= SHARDS:
            raise ValueError(f"{SHARD_ENV} must be a shard between 0 and {SHARDS - 1}")
        return int(given)
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    return zlib.crc32(f"{host}:{pid}".encode()) % SHARDS


def shard_after(shard: int, steps: int) -> int:
    return (shard + steps) % SHARDS


class UsageLedger:
    """Takes and releases on this process's shard of each usage (domain/usage.py), refilled
    from the main usage when short. `shard`: which one (by default `process_shard()`)."""

    def __init__(
        self, store: NornEventStore, counts: UsageCounts, shard: int | None = None
    ) -> None:
        self._store = store
        self._counts = counts
        self._guard = threading.Lock()
        self._keys: dict[UUID, _UsageKey] = {}
        self.shard = process_shard() if shard is None else shard

    def key(self, tenant_id: str, quota: str) -> UUID:
        """The id of the shard this ledger takes the quota's resource from."""
        resource = QUOTA_RESOURCES[quota]
        return shard_id(tenant_id, resource, period_of(resource), self.shard)

    @contextmanager
    def take(
        self, tenant: Tenant, quota: str, ctx: CommandContext, amount: int = 1
    ) -> Iterator[UsageShard]:
        """Take `amount` of the quota's resource, or raise QuotaExceeded. Save the
        yielded aggregate in the command's own append, inside the block."""
        limit = tenant.quota(quota)

        def decide(shard: UsageShard) -> None:
            shard.take(amount, limit, ctx)

        def refill(shard: UsageShard) -> UsageShard:
            return self._refill(shard, amount, limit, quota, ctx)

        resource = QUOTA_RESOURCES[quota]
        with self._held(tenant.tenant_id, resource, ctx, decide, refill) as shard:
            yield shard

    @contextmanager
    def release(
        self, tenant_id: str, quota: str, ctx: CommandContext, amount: int = 1
    ) -> Iterator[UsageShard]:
        """Give back `amount`; save the yielded aggregate in the command's own append."""

        def decide(shard: UsageShard) -> None:
            shard.release(amount, ctx)

        with self._held(tenant_id, QUOTA_RESOURCES[quota], ctx, decide, None) as shard:
            yield shard

    def used(self, tenant_id: str, quota: str) -> int | None:
        """What the tenant holds now as the event store says, None before usage of the
        resource is kept."""
        resource = QUOTA_RESOURCES[quota]
        period = period_of(resource)
        main = self._store.find(Usage, usage_id(tenant_id, resource, period))
        if main is None:
            return None
        free = sum(shard.free for shard in self._shards(tenant_id, resource, period))
        return max(0, main.used - free)

    @contextmanager
    def _held(
        self,
        tenant_id: str,
        resource: str,
        ctx: CommandContext,
        decide: Callable[[UsageShard], None],
        refill: Callable[[UsageShard], UsageShard] | None,
    ) -> Iterator[UsageShard]:
        """The command's turn on this process's shard, from its decision until its events
        are handed over for the next append (application/group_commit.py), not until they
        are stored: the next command decides on the copy that includes them. A shard too
        short to decide on is refilled from the store's copy, once this process's
        appends of it are in."""
        period = period_of(resource)
        key = shard_id(tenant_id, resource, period, self.shard)
        held = self._key_of(key)
        held.turn.acquire()
        try:
            epoch = held.queue.epoch
            shard = held.take_kept()
            if unit_of_work.current() is not None:
                # An atomic batch cannot retry a lost race, and the kept copy may be behind
                # another process's reclaim of this shard (a refill at the limit): the
                # batch decides on the store's copy.
                shard = None
            if shard is not None:
                try:
                    decide(shard)
                except ShardShort:
                    # Once this process's appends of it are in, the kept copy is the
                    # stored shard (unless one failed: then read it), and refilled from
                    # there: read again, it was a replay of every take since the last
                    # refill. Should another process have reclaimed from it meanwhile,
                    # the refill's append is refused and _refill reads it again.
                    current = held.queue.settle(epoch)
                    epoch = held.queue.epoch
                    shard = _decided(shard, decide, refill) if current else None
            if shard is None:
                stored = self._stored(key, tenant_id, resource, period, ctx, refill is None)
                shard = _decided(stored, decide, refill)
        except BaseException:
            held.turn.release()
            raise

        def hand_over() -> None:
            held.keep(shard, epoch)
            held.turn.release()

        turn = group_commit.Turn(key, held.queue, epoch, hand_over, alone=group_commit.alone_once())
        token = group_commit.enter(turn)
        try:
            yield shard
        except BaseException:
            # Not kept after an error: the copy may be ahead of the store (its events
            # were collected for an append that failed).
            if not turn.ended:
                held.turn.release()
            raise
        else:
            if not turn.ended:  # appended alone, or staged in an atomic batch
                if not shard.pending_events:
                    held.keep(shard, epoch)
                held.turn.release()
        finally:
            group_commit.leave(token)

    def _stored(
        self,
        key: UUID,
        tenant_id: str,
        resource: str,
        period: str,
        ctx: CommandContext,
        start_main: bool,
    ) -> UsageShard:
        """The shard as the store holds it, or a new one. A release into a new shard
        first makes sure the main usage exists (so that the unit it frees is counted
        against a count that includes it); a take refills a new shard, which starts the
        main in the same append."""
        shard = self._store.find(UsageShard, key)
        if shard is None:
            if start_main:
                self._main(tenant_id, resource, period, ctx, start=True)
            shard = UsageShard.open(
                tenant_id=tenant_id, resource=resource, period=period, shard=self.shard, ctx=ctx
            )
        return shard

    def _main(
        self, tenant_id: str, resource: str, period: str, ctx: CommandContext, *, start: bool
    ) -> Usage:
        """The main usage as the store holds it; if there is none, its start, counted
        from what exists: stored at once when `start`, else left for the caller's
        append. Two processes starting it at once: one start is stored, the other reads
        it."""
        key = usage_id(tenant_id, resource, period)
        for _ in range(2):
            main = self._store.find(Usage, key)
            if main is not None:
                return main
            used = self._counts.count(tenant_id, resource) or 0
            main = Usage.start(
                tenant_id=tenant_id, resource=resource, period=period, used=used, ctx=ctx
            )
            if not start:
                return main
            try:
                self._save(main)
                return main
            except IntegrityError:
                continue
        raise VersionConflict("the usage was started concurrently; try again", raced=True)

    def _refill(
        self, shard: UsageShard, amount: int, limit: int, quota: str, ctx: CommandContext
    ) -> UsageShard:
        """Allot the shard enough free units for `amount` (and some to spare) from the main
        usage, in an append of both of their own. When the main has too little left, or
        the limit is lower than the one the shard's units were allotted under, every
        shard's free units are reclaimed into it first, in the same append: the main then
        counts exactly what the tenant holds, and the take is refused (QuotaExceeded,
        nothing appended) or allotted on that."""
        tenant_id, resource, period = shard.tenant_id, shard.resource, shard.period
        for lost in range(CONFLICT_ATTEMPTS):
            lowered = shard.limit is not None and limit < shard.limit
            if lost and not lowered and shard.free >= amount:
                # Another process on this shard refilled it meanwhile (one not started
                # by this `norn serve` may share it): take from that.
                return shard
            main = self._main(tenant_id, resource, period, ctx, start=False)
            changed: list[Usage | UsageShard] = [main, shard]
            need = amount - shard.free
            if lowered or main.used + need > limit:
                for other in self._shards(tenant_id, resource, period):
                    if other.shard != shard.shard and other.free > 0:
                        main.reclaim(other, ctx)
                        changed.append(other)
                main.reclaim(shard, ctx)
                need = amount
                if main.used + need > limit:
                    raise QuotaExceeded(quota, limit, main.used)
            spare = min(GRANT_SPARE_MAX, (limit - main.used - need) // GRANT_SPARE_SHARE)
            main.allot(shard.shard, need + spare, limit, quota, ctx)
            shard.grant(need + spare, limit, ctx)
            try:
                self._save(*changed)
                return shard
            except IntegrityError:
                pause_after(lost)
                shard = self._stored(shard.id, tenant_id, resource, period, ctx, False)
        raise VersionConflict("the usage kept changing concurrently; try again", raced=True)

    def _shards(self, tenant_id: str, resource: str, period: str) -> list[UsageShard]:
        """Every shard of the usage that exists (one query asks which, where the store can)."""
        ids = [shard_id(tenant_id, resource, period, n) for n in range(SHARDS)]
        if self._store.versions is not None:
            present = self._store.versions(ids)
            ids = [i for i in ids if i in present]
        found = (self._store.find(UsageShard, i) for i in ids)
        return [shard for shard in found if shard is not None]

    def _save(self, *aggregates: Usage | UsageShard) -> None:
        """A bookkeeping append of its own (it moves units, the total stays), outside the
        command's; within an atomic batch it is staged with the batch like the rest."""
        if unit_of_work.current() is not None:
            self._store.append(*aggregates)
        else:
            self._store.record(*aggregates)

    def _key_of(self, key: UUID) -> _UsageKey:
        with self._guard:
            held = self._keys.get(key)
            if held is None:
                if len(self._keys) >= KEPT_MAX:
                    # Drop the idle ones; one being waited on may be replaced, which
                    # only costs a conflict and a retry, never a wrong count.
                    self._keys = {k: v for k, v in self._keys.items() if not v.idle}
                held = self._keys[key] = _UsageKey()
            return held
