"""The one event-sourced application every service shares: one stored-events table, so
the notification log gives one gapless-ordered global position for all aggregates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Recording,
)
from eventsourcing.domain import Aggregate, BaseAggregate, DomainEvent
from eventsourcing.persistence import IntegrityError

from application import group_commit, unit_of_work
from application.errors import NotFound, VersionConflict
from domain.errors import Conflict

A = TypeVar("A", bound=Aggregate)


class NornEventStore(Application[UUID]):
    name = "norn"  # -> table norn_events, NOTIFY channel norn_events

    versions: Callable[[Sequence[UUID]], dict[UUID, int]] | None = None
    """The current version of each of some aggregates, in one query (set by
    infrastructure/postgres.py); lets `current` skip reading what has not changed."""

    head: Callable[[UUID], tuple[int, int] | None] | None = None
    """The version and global position of an aggregate's last event, in one query (set
    by infrastructure/postgres.py); `head_of` reads the notification log without it."""

    def head_of(self, aggregate_id: UUID) -> tuple[int, int] | None:
        """(version, position) of the aggregate's last event: what a client told that
        its If-Match is stale needs, to re-read with ?min_position= (the error path only;
        the in-memory store of the tests reads its whole log)."""
        if self.head is not None:
            return self.head(aggregate_id)
        last = None
        for notification in self.recorder.select_notifications(start=1, limit=10**9):
            if notification.originator_id == aggregate_id:
                last = (notification.originator_version, notification.id)
        return last

    version_at: Callable[[UUID, int], int | None] | None = None
    """The aggregate's last version stored at or below a global position, in one query
    (set by infrastructure/postgres.py); `version_at_position` reads the log without it."""

    def version_at_position(self, aggregate_id: UUID, position: int) -> int | None:
        """The version the aggregate had once every event up to `position` was stored
        (None: it had no event yet): what a point-in-time read rebuilds."""
        if self.version_at is not None:
            return self.version_at(aggregate_id, position)
        found = None
        for notification in self.recorder.select_notifications(start=1, limit=10**9, stop=position):
            if notification.originator_id == aggregate_id:
                found = notification.originator_version
        return found

    def load(self, cls: type[A], aggregate_id: UUID, kind: str, version: int | None = None) -> A:
        staged = _staged(aggregate_id, version)
        if staged is not None:  # an earlier command of this unit of work changed it
            if not isinstance(staged, cls):
                raise NotFound(kind, aggregate_id)
            return staged
        try:
            aggregate = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(kind, aggregate_id) from None
        if not isinstance(aggregate, cls):
            raise NotFound(kind, aggregate_id)
        return aggregate

    appends: Callable[[UUID, int], tuple[int, int] | None] | None = None
    """The version an aggregate had after the append that stored its event at a version,
    and that append's last position, in one query (set by infrastructure/postgres.py)."""

    def find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        staged = _staged(aggregate_id)
        if staged is not None:
            return staged if isinstance(staged, cls) else None
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    def appended(self, aggregate_id: UUID, version: int = 1) -> tuple[int, int] | None:
        """(version, position) after the append that stored the aggregate's event at
        `version` (1: the append that created it), or None when there is no such event:
        what the command of that append answered (application/idempotency.py)."""
        if self.appends is None:
            raise RuntimeError("this event store cannot tell its appends apart")
        return self.appends(aggregate_id, version)

    def current(self, *ids: UUID, versions: dict[UUID, int] | None = None) -> dict[UUID, Aggregate]:
        """Each of the aggregates that exists, as it is now, for reading only: when the
        repository's cached copy is at the aggregate's current version (one query asks
        for all of them, unless the caller read `versions` already), that copy itself is
        returned, so never change what this returns (commands use `load`, which copies)."""
        latest = versions
        if latest is None and self.versions is not None:
            latest = self.versions(ids)
        found: dict[UUID, Aggregate] = {}
        for aggregate_id in ids:
            staged = _staged(aggregate_id)
            if staged is not None:
                found[aggregate_id] = staged
                continue
            if latest is not None:
                if aggregate_id not in latest:
                    continue
                cached = self.cached_copy(aggregate_id)
                if cached is not None and cached.version == latest[aggregate_id]:
                    found[aggregate_id] = cached
                    continue
            try:
                found[aggregate_id] = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                continue
        return found

    def cached(self, *ids: UUID, versions: dict[UUID, int]) -> dict[UUID, Aggregate] | None:
        """What `current(*ids, versions=versions)` answers when it needs no query: every
        aggregate of `versions` whose cached copy is at that version (the same copies,
        so never change them); None when one is not cached at it (or is staged in a
        unit of work), and `current` has to load it."""
        found: dict[UUID, Aggregate] = {}
        for aggregate_id in ids:
            if aggregate_id not in versions:
                continue
            cached = self.cached_copy(aggregate_id)
            if (
                _staged(aggregate_id) is not None
                or cached is None
                or cached.version != versions[aggregate_id]
            ):
                return None
            found[aggregate_id] = cached
        return found

    def cached_copy(self, aggregate_id: UUID) -> Aggregate | None:
        """The repository's cached copy, current or not (never change it)."""
        cache = self.repository.cache
        if not cache:
            return None
        try:
            return cache.get(aggregate_id)
        except KeyError:
            return None

    def append(
        self, *aggregates: Aggregate | DomainEvent | None, precondition: bool = False
    ) -> int | None:
        """Save pending events of the aggregates in one atomic append; return the global
        position of the last one (None when there was nothing to save). Events collected
        from new aggregates before may be given instead of them, so that an append that
        lost a race can be tried again without building them afresh (not in a unit of
        work, which keeps aggregates).
        precondition: the caller sent If-Match, so losing the race means its precondition
        failed (412) rather than a plain conflict (409). Within a unit of work
        (application/unit_of_work.py) nothing is written yet: the aggregates are kept for
        its commit, and the position is `unit_of_work.PENDING`."""
        unit = unit_of_work.current()
        if unit is not None:
            kept = [a for a in aggregates if not isinstance(a, DomainEvent)]
            if len(kept) != len(aggregates):
                raise TypeError("a unit of work keeps aggregates, not their events")
            return unit.stage(*kept)
        turn = group_commit.current()
        try:
            if turn is not None:  # a turn on a usage: appended with the others waiting
                return turn.append(self, aggregates)
            return self.record(*aggregates)
        except IntegrityError as refused:
            head = None
            if precondition and aggregates and aggregates[0] is not None:
                # The client's If-Match was current a moment ago: tell it what won.
                head = self.head_of(aggregates[0].id)
            raise VersionConflict(
                "a concurrent change was saved first; reload and try again",
                precondition=precondition,
                current_version=head[0] if head else None,
                position=head[1] if head else None,
                aggregate_id=refused.originator_id if isinstance(refused, VersionTaken) else None,
            ) from None

    def record(self, *aggregates: Aggregate | DomainEvent | None) -> int | None:
        """`save`, answering the position of the append's last event (None: nothing)."""
        recordings = self.save(*aggregates)
        return recordings[-1].notification.id if recordings else None

    def encoded_once(self) -> AbstractContextManager[Any]:
        """Within it, events appended again (the same objects: an append that lost a race
        tried again) are not encoded again, where the mapper can keep them
        (infrastructure/mapper.py)."""
        keep = getattr(self.mapper, "encoded_once", None)
        return keep() if keep is not None else nullcontext()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """The library's `save`, step for step, with a collector that tells an aggregate
        by its class (see `_Collected`)."""
        processing = _Collected()
        processing.collect_events(*objs, **kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # the library's deprecated hook, as its save does
        return recordings

    def collected(self, *objs: Any) -> _Collected:
        """The pending events of the aggregates (taken from them), for `record_together`."""
        processing = _Collected()
        processing.collect_events(*objs)
        return processing

    def record_together(self, batches: Sequence[_Collected]) -> int | None:
        """Several commands' collected events in one append, in order (group commit,
        application/group_commit.py): the position of its last event, which each of the
        commands answers (as `appended` tells a retried request later: a command's
        position is that of its append, whole), or the append's error for all. Saved
        aggregates are not put in the repository's cache (with fast-forward, our
        setting, `save` does not either): a usage aggregate here may already hold later
        commands' decisions, which a failed append would make untrue."""
        events = [event for batch in batches for event in batch.events]
        recordings = self.events.put(events)
        self._notify(recordings)
        self.notify(events)
        return recordings[-1].notification.id if recordings else None

    def stream(self, aggregate_id: UUID) -> Sequence[Any]:
        return list(self.events.get(aggregate_id))


class VersionTaken(IntegrityError):
    """An append refused because the aggregate `originator_id` already has an event at
    the version it tried: raised by recorders that can tell which aggregate it was
    (infrastructure/recorder.py), so a caller appending several knows which one lost."""

    def __init__(self, message: str, originator_id: UUID) -> None:
        super().__init__(message)
        self.originator_id = originator_id


class _Collected(ProcessingEvent[UUID]):
    """The library's collector first asks whether each object is a domain event with
    isinstance against a runtime-checkable Protocol, which Python 3.11 answers by walking
    the protocol's members on every call: about 20 µs an aggregate, 9% of a scheduler
    pass that queues hundreds of runs. An aggregate or an event is known by its class
    here; anything else goes the library's way."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif isinstance(obj, DomainEvent):
                self.events.append(obj)
            elif obj is not None:
                others.append(obj)
        super().collect_events(*others, **kwargs)


def _staged(aggregate_id: UUID, version: int | None = None) -> Aggregate | None:
    """The aggregate as the command's unit of work holds it (None outside one, or when it
    holds none of that id). An older version is read from the store, unless it is one the
    unit has not committed yet, which no command of it may ask for."""
    unit = unit_of_work.current()
    if unit is None:
        return None
    kept = unit.kept(aggregate_id)
    if kept is None or version is None:
        return kept
    stored = unit.stored_version(aggregate_id) or 0
    if version > stored:
        raise Conflict(
            f"{type(kept).__name__.lower()} {aggregate_id}: version {version} is made by this"
            " atomic batch and cannot be read before its commit; send it in a separate request"
        )
    return None


def check_expected_version(
    actual: int, expected: int | None, position: Callable[[], int | None] = lambda: None
) -> None:
    """Compare an If-Match version with the aggregate's current version; a stale one
    carries the current version and `position()`, where the client can wait for it."""
    if expected is not None and expected != actual:
        raise VersionConflict(
            f"version is {actual}, not {expected} as the request expected",
            precondition=True,
            raced=False,
            current_version=actual,
            position=position(),
        )
