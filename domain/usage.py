"""Usage: how much of one counted resource a tenant holds, kept by the event store.

One aggregate per (tenant, resource[, period]), its id derived from them like a name
claim's. A command that adds to the resource takes from it in the same atomic append as
its own events, so the store's unique (originator_id, originator_version) decides: two
commands that both read the last free unit cannot both be saved. A command that removes
one releases it in its own append (both on the process's shard, below). The main usage
starts the count from what existed before usage was kept (see application/quotas.py).

Escrow across processes: a process takes and releases on its own `UsageShard` of the
usage (one of SHARDS, by process), which holds `free` units the main `Usage` allotted to
it. The main counts what is held plus every shard's free units (`used`), so
`main.used - sum(free)` is what the tenant holds, and `main.used <= limit` whenever the
main allots. A take from a shard's free units touches only that shard: processes of one
tenant do not race on one aggregate. A shard short of units is refilled from the main in
an append of both; when the main has nothing left to allot, every shard's free units are
reclaimed into it first, so the decision at the quota's edge is exact.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import QuotaExceeded, ShardShort
from domain.events import CommandContext, NornCreated, NornEvent

SHARDS = 16
"""Shards per usage: processes whose shards differ never race on a take or release."""


def usage_id(tenant_id: str, resource: str, period: str = "") -> UUID:
    return uuid5(NAMESPACE_URL, f"norn:usage:{tenant_id}:{resource}:{period}")


def shard_id(tenant_id: str, resource: str, period: str, shard: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"norn:usage:{tenant_id}:{resource}:{period}:shard:{shard}")


class UsageEvent(NornEvent):
    aggregate_type = "usage"


class UsageCounted(UsageEvent, NornCreated):
    """Usage starts being kept, at what was counted then."""

    resource: str
    period: str
    used: int

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class UsageTaken(UsageEvent):
    """A take from the main usage itself, before shards: replayed, no longer made."""

    amount: int
    used: int
    """After the take: the count is readable from any single event."""

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class UsageReleased(UsageEvent):
    """A release into the main usage itself, before shards: replayed, no longer made."""

    amount: int
    used: int

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class UsageAllotted(UsageEvent):
    """Free units handed to a shard: held from now on, as far as the main counts."""

    shard: int
    amount: int
    used: int

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class UsageReclaimed(UsageEvent):
    """A shard's free units taken back."""

    shard: int
    amount: int
    used: int

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class Usage(Aggregate):
    def __init__(self, tenant_id: str, resource: str, period: str) -> None:
        self.tenant_id = tenant_id
        self.resource = resource
        self.period = period
        self.used = 0

    @classmethod
    def start(
        cls, *, tenant_id: str, resource: str, period: str, used: int, ctx: CommandContext
    ) -> Usage:
        if used < 0:
            raise ValueError("usage cannot be negative")
        return cls._create(
            UsageCounted,
            id=usage_id(tenant_id, resource, period),
            tenant_id=tenant_id,
            resource=resource,
            period=period,
            used=used,
            **ctx.event_fields(),
        )

    def allot(self, shard: int, amount: int, limit: int, quota: str, ctx: CommandContext) -> None:
        """Hand `amount` free units to a shard; refused past `limit`, like a take."""
        if amount < 1:
            raise ValueError("allot at least one")
        if self.used + amount > limit:
            raise QuotaExceeded(quota, limit, self.used)
        self.trigger_event(
            UsageAllotted,
            tenant_id=self.tenant_id,
            shard=shard,
            amount=amount,
            used=self.used + amount,
            **ctx.event_fields(),
        )

    def reclaim(self, shard: UsageShard, ctx: CommandContext) -> None:
        """Take every free unit of the shard back. Never below zero: a release of
        something counted before usage was kept, and since removed, frees a unit that
        nothing holds."""
        amount = shard.free
        if amount < 1:
            return
        shard.give_back(ctx)
        self.trigger_event(
            UsageReclaimed,
            tenant_id=self.tenant_id,
            shard=shard.shard,
            amount=amount,
            used=max(0, self.used - amount),
            **ctx.event_fields(),
        )


class UsageShardEvent(UsageEvent):
    free: int
    """After the event: the shard's state is readable from any single event."""

    def apply(self, aggregate: UsageShard) -> None:
        aggregate.free = self.free


class UsageShardOpened(UsageShardEvent, NornCreated):
    resource: str
    period: str
    shard: int


class UsageShardGranted(UsageShardEvent):
    amount: int
    limit: int
    """The quota's limit when the units were allotted (see `UsageShard.take`)."""

    def apply(self, aggregate: UsageShard) -> None:
        aggregate.free = self.free
        aggregate.limit = self.limit


class UsageShardReturned(UsageShardEvent):
    amount: int


class UsageShardTaken(UsageShardEvent):
    amount: int


class UsageShardReleased(UsageShardEvent):
    amount: int


class UsageShard(Aggregate):
    """One process's part of a tenant's usage: the units it may take without asking."""

    def __init__(self, tenant_id: str, resource: str, period: str, shard: int) -> None:
        self.tenant_id = tenant_id
        self.resource = resource
        self.period = period
        self.shard = shard
        self.free = 0
        self.limit: int | None = None

    @classmethod
    def open(
        cls, *, tenant_id: str, resource: str, period: str, shard: int, ctx: CommandContext
    ) -> UsageShard:
        if not 0 <= shard < SHARDS:
            raise ValueError(f"a shard is 0 to {SHARDS - 1}")
        return cls._create(
            UsageShardOpened,
            id=shard_id(tenant_id, resource, period, shard),
            tenant_id=tenant_id,
            resource=resource,
            period=period,
            shard=shard,
            free=0,
            **ctx.event_fields(),
        )

    def take(self, amount: int, limit: int, ctx: CommandContext) -> None:
        """From the free units, while the quota's limit is not below the one they were
        allotted under (a lowered limit is decided on the whole usage); else
        ShardShort: refill it from the main first."""
        if amount < 1:
            raise ValueError("take at least one")
        if self.free < amount or (self.limit is not None and limit < self.limit):
            raise ShardShort(self.free, amount)
        self._record(UsageShardTaken, amount, self.free - amount, ctx)

    def release(self, amount: int, ctx: CommandContext) -> None:
        """A unit given back becomes free here, for this process's next take."""
        if amount < 1:
            raise ValueError("release at least one")
        self._record(UsageShardReleased, amount, self.free + amount, ctx)

    def grant(self, amount: int, limit: int, ctx: CommandContext) -> None:
        """Units the main allotted (`Usage.allot`, in the same append)."""
        self.trigger_event(
            UsageShardGranted,
            tenant_id=self.tenant_id,
            amount=amount,
            limit=limit,
            free=self.free + amount,
            **ctx.event_fields(),
        )

    def give_back(self, ctx: CommandContext) -> None:
        """Every free unit, to the main (`Usage.reclaim`, in the same append)."""
        self._record(UsageShardReturned, self.free, 0, ctx)

    def _record(
        self, event: type[UsageShardEvent], amount: int, free: int, ctx: CommandContext
    ) -> None:
        self.trigger_event(
            event, tenant_id=self.tenant_id, amount=amount, free=free, **ctx.event_fields()
        )
