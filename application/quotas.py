"""Quota enforcement on write-side facts: a command that adds to a counted resource takes
from the tenant's Usage aggregate (domain/usage.py) and saves it in the same atomic
append as its own events; one that removes releases it the same way. The event store's
unique (originator_id, originator_version) is then the only arbiter: two commands that
both saw the last free unit cannot both be saved, in one process or in several.

Within a process, the commands of one tenant's resource take turns on it (a lock held
from the decision until the command's events are handed over for the next append, which
stores every batch handed over meanwhile together: application/group_commit.py) and the
aggregate is kept between them, so a warm command reads nothing to decide. Across
processes a kept copy may be stale: its append then conflicts, the copy is dropped, and
the command is tried again (`retry_on_conflict`). Commands of different tenants never
wait for each other.

Usage is counted once per tenant and resource (and period), at its first take or
release, from the read model plus the unprojected events (projections/usage.py, exact):
that start is itself an event in the same append, so two first takes cannot both count.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from application import group_commit
from application.errors import QuotaExceeded, VersionConflict
from application.event_store import NornEventStore
from application.ports import Usage as UsageCounts
from domain.events import CommandContext
from domain.tenant import Tenant
from domain.usage import Usage, usage_id

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

CONFLICT_ATTEMPTS = 12
"""How often a command is tried when its append loses a race (a stale usage copy, a name
claimed meanwhile): each attempt reads what changed, so only a steady stream of
concurrent commands of the same tenant's resource in other processes exhausts them."""
RETRY_PAUSE = 0.002
"""Seconds of the first pause after a lost race; it doubles per loss (at most
RETRY_PAUSE_CAP) and is drawn at random below that, so two processes that keep
colliding on one tenant's usage (an API queueing runs while a scheduler or trigger loop
does) fall out of step.
Twelve attempts with pauses up to 100 ms: on a loaded 2-core box, an API queueing a run
every 10 ms beside two trigger loops lost eight races in a row now and then (a 409 to a
client that did nothing wrong); the lasting fix is a usage aggregate that is not one
row per tenant."""
RETRY_PAUSE_CAP = 0.1

KEPT_MAX = 10_000
"""Usage aggregates a process keeps between commands (one per busy tenant resource)."""

T = TypeVar("T")


def period_of(resource: str, now: datetime | None = None) -> str:
    if resource not in PER_DAY:
        return ""
    return (now or datetime.now(UTC)).date().isoformat()


def retry_on_conflict(attempt: Callable[[], T], attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run `attempt` until its append is not refused for a concurrent change, at most
    `attempts` times. Only for commands whose failed append wrote nothing and that build
    their events afresh each time (a new aggregate with a new id, a usage take)."""
    for lost in range(attempts - 1):
        try:
            return attempt()
        except VersionConflict as conflict:
            if not conflict.raced:
                raise  # an If-Match already stale: the answer is 412 at once
        time.sleep(random.uniform(0, min(RETRY_PAUSE_CAP, RETRY_PAUSE * 2**lost)))  # noqa: S311
    return attempt()


class _UsageKey:
    """What a process holds for one usage aggregate: the turn commands take on it, the
    queue their appends go through, and the copy the last of them left (with the epoch
    of the queue it was made in)."""

    __slots__ = ("epoch", "kept", "queue", "turn")

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.queue = group_commit.CommitQueue()
        self.kept: Usage | None = None
        self.epoch = 0

    @property
    def idle(self) -> bool:
        return not self.turn.locked() and self.queue.idle

    def take_kept(self) -> Usage | None:
        """The copy, if no failed append has made it stale since; no longer kept."""
        usage, self.kept = self.kept, None
        return usage if usage is not None and self.epoch == self.queue.epoch else None

    def keep(self, usage: Usage, epoch: int) -> None:
        self.kept, self.epoch = usage, epoch


class UsageLedger:
    def __init__(self, store: NornEventStore, counts: UsageCounts) -> None:
        self._store = store
        self._counts = counts
        self._guard = threading.Lock()
        self._keys: dict[UUID, _UsageKey] = {}

    @contextmanager
    def take(
        self, tenant: Tenant, quota: str, ctx: CommandContext, amount: int = 1
    ) -> Iterator[Usage]:
        """Take `amount` of the quota's resource, or raise QuotaExceeded. Save the
        yielded aggregate in the command's own append, inside the block."""

        def decide(usage: Usage) -> None:
            usage.take(amount, tenant.quota(quota), quota, ctx)

        with self._held(tenant.tenant_id, QUOTA_RESOURCES[quota], ctx, decide) as usage:
            yield usage

    @contextmanager
    def release(
        self, tenant_id: str, quota: str, ctx: CommandContext, amount: int = 1
    ) -> Iterator[Usage]:
        """Give back `amount`; save the yielded aggregate in the command's own append."""

        def decide(usage: Usage) -> None:
            usage.release(amount, ctx)

        with self._held(tenant_id, QUOTA_RESOURCES[quota], ctx, decide) as usage:
            yield usage

    def used(self, tenant_id: str, quota: str) -> int | None:
        """What the tenant holds now as the event store says, None before usage of the
        resource is kept."""
        resource = QUOTA_RESOURCES[quota]
        usage = self._store.find(Usage, usage_id(tenant_id, resource, period_of(resource)))
        return None if usage is None else usage.used

    @contextmanager
    def _held(
        self,
        tenant_id: str,
        resource: str,
        ctx: CommandContext,
        decide: Callable[[Usage], None],
    ) -> Iterator[Usage]:
        """The command's turn on the usage, from its decision until its events are handed
        over for the next append (application/group_commit.py), not until they are
        stored: the next command decides on the copy that includes them. A refusal
        decided on the kept copy is decided again on the store's (another process may
        have given units back meanwhile), once this process's appends of it are in."""
        period = period_of(resource)
        key = usage_id(tenant_id, resource, period)
        held = self._key_of(key)
        held.turn.acquire()
        try:
            epoch = held.queue.epoch
            usage = held.take_kept()
            if usage is not None:
                try:
                    decide(usage)
                except QuotaExceeded:
                    held.queue.settle(epoch)
                    epoch, usage = held.queue.epoch, None
            if usage is None:
                usage = self._stored(key, tenant_id, resource, period, ctx)
                decide(usage)
        except BaseException:
            held.turn.release()
            raise

        def hand_over() -> None:
            held.keep(usage, epoch)
            held.turn.release()

        turn = group_commit.Turn(key, held.queue, epoch, hand_over, alone=group_commit.alone_once())
        token = group_commit.enter(turn)
        try:
            yield usage
        except BaseException:
            # Not kept after an error: the copy may be ahead of the store (its events
            # were collected for an append that failed).
            if not turn.ended:
                held.turn.release()
            raise
        else:
            if not turn.ended:  # appended alone, or staged in an atomic batch
                if not usage.pending_events:
                    held.keep(usage, epoch)
                held.turn.release()
        finally:
            group_commit.leave(token)

    def _stored(
        self, key: UUID, tenant_id: str, resource: str, period: str, ctx: CommandContext
    ) -> Usage:
        """The usage as the store holds it, or its start, counted from what exists."""
        usage = self._store.find(Usage, key)
        if usage is None:
            used = self._counts.count(tenant_id, resource) or 0
            usage = Usage.start(
                tenant_id=tenant_id, resource=resource, period=period, used=used, ctx=ctx
            )
        return usage

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
