"""Group commit of the commands that take turns on one usage aggregate (application/quotas.py;
docs/architecture.md, "Group commit").

The commands that take from or give back to one tenant's resource decide one after
another: each needs the usage as the one before left it. Holding that turn until the
append had committed made them commit one after another too, so one tenant's creates ran
at the rate of one round trip and one WAL flush at a time, however many clients sent
them. Here a command's turn ends when its events are handed over, not when they are
stored: the next command decides on the usage as it will be once those events are
stored, and every batch handed over while an append runs goes into the next append
together, in the order the batches were decided (one statement, one transaction).

Nothing is stored out of order or with a hole in an aggregate's versions: a batch is
written only in the same append as, or after, every batch decided before it on the same
copy of the usage. When an append fails, every batch in it fails, and so does every
batch decided on that copy since (the copy's *epoch* ends, application/quotas.py drops
it): each of their commands is told it lost a race (VersionConflict) and is tried again
on the usage read afresh (`retry_on_conflict`). One that lost only for another's sake
takes its next turn alone (holding it until its own append commits), so a command that
fails again and again (a taken name sent in a loop) cannot keep failing the others."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar, Token
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError


class LostWithOthers(IntegrityError):
    """The append this command's events were in failed for another command's sake, or
    they were decided on a usage copy that such a failure made stale: a lost race."""


class GroupRecorder(Protocol):
    """What the queue needs of the event store (application/event_store.py)."""

    def collected(self, *aggregates: Any) -> Any: ...

    def record(self, *aggregates: Any) -> int | None: ...

    def record_together(self, batches: Sequence[Any]) -> int | None: ...


_WAITING, _LEADS, _DONE = 0, 1, 2


class _Batch:
    """One command's collected events, handed over for the next append."""

    __slots__ = ("error", "originators", "position", "processing", "ready", "state")

    def __init__(self, processing: Any) -> None:
        self.processing = processing
        self.originators = {event.originator_id for event in processing.events}
        self.ready = threading.Event()
        self.state = _WAITING
        self.position: int | None = None
        self.error: BaseException | None = None


class CommitQueue:
    """The batches of one usage aggregate, appended in the order they were decided: the
    command that finds no append running appends every batch waiting then, in one; when it
    ends, the first batch that came meanwhile leads the next one."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._settled = threading.Condition(self._mutex)
        self._waiting: list[_Batch] = []
        self._running = False
        self.epoch = 0
        """Counts the failed appends: a batch decided on a copy of the usage made before
        the latest failure is refused without trying (application/quotas.py keeps the
        copy with the epoch it was made in)."""

    @property
    def idle(self) -> bool:
        return not self._running and not self._waiting

    def settle(self, epoch: int) -> bool:
        """Wait until no batch is waiting or being appended; then whether a copy made in
        `epoch` is still good. A command appending alone calls it while it holds the
        turn, so no new batch comes meanwhile, and its own append cannot overtake one
        decided before it."""
        with self._settled:
            while self._running or self._waiting:
                self._settled.wait()
            return epoch == self.epoch

    def commit(
        self, store: GroupRecorder, processing: Any, epoch: int, end_turn: Callable[[], None]
    ) -> int | None:
        """Hand the batch over, end the command's turn (`end_turn`: the next command may
        decide now), and wait for the append the batch goes into: its last position, or the
        error of that append (LostWithOthers when the fault was another batch's)."""
        batch = _Batch(processing)
        with self._mutex:
            current = epoch == self.epoch
            if current:
                self._waiting.append(batch)
                if not self._running:
                    self._running = True
                    batch.state = _LEADS
        end_turn()
        if not current:
            raise LostWithOthers("decided on a usage copy an earlier failed append made stale")
        if batch.state != _LEADS:
            batch.ready.wait()
        if batch.state == _LEADS:
            self._lead(store)
        if batch.error is not None:
            raise batch.error
        return batch.position

    def _lead(self, store: GroupRecorder) -> None:
        with self._mutex:
            group, self._waiting = self._waiting, []
        try:
            position = store.record_together([batch.processing for batch in group])
        except BaseException as error:
            with self._mutex:
                self.epoch += 1
                stale, self._waiting = self._waiting, []
                self._running = False
                self._settled.notify_all()
            _fail(group, error)
            for batch in stale:
                _finish(batch, error=LostWithOthers("an append decided before it failed"))
            return
        with self._mutex:
            following = self._waiting[0] if self._waiting else None
            self._running = following is not None
            if following is None:
                self._settled.notify_all()
        for batch in group:
            _finish(batch, position=position)
        if following is not None:
            following.state = _LEADS
            following.ready.set()


def _fail(group: list[_Batch], error: BaseException) -> None:
    """Every batch of a failed append fails: with its error where the refusal names an
    aggregate of the batch (or names none), else as having lost with the others."""
    refused = getattr(error, "originator_id", None)
    for batch in group:
        innocent = (
            isinstance(error, IntegrityError)
            and refused is not None
            and refused not in batch.originators
        )
        lost = LostWithOthers("another command's append failed") if innocent else error
        _finish(batch, error=lost)


def _finish(
    batch: _Batch, *, position: int | None = None, error: BaseException | None = None
) -> None:
    batch.position = position
    batch.error = error
    batch.state = _DONE
    batch.ready.set()


class Turn:
    """One command's turn on a usage aggregate (application/quotas.py `_held`): its append
    goes through the queue, and handing the events over ends the turn (`end`). A turn
    nested in another (a command holding two usages) or taken after losing for another's
    sake appends alone, as every append did before group commit: holding its turns until
    its append has committed, and only once the batches decided before it on those usages
    are stored (or, if their append failed, not at all)."""

    def __init__(
        self,
        usage_id: Any,
        queue: CommitQueue,
        epoch: int,
        end: Callable[[], None],
        *,
        alone: bool,
    ) -> None:
        self.usage_id = usage_id
        self._queue = queue
        self._epoch = epoch
        self._end = end
        self.alone = alone
        self.ended = False
        self.outer: Turn | None = None

    def append(self, store: GroupRecorder, aggregates: Sequence[Any]) -> int | None:
        """Append the aggregates: through the queue if a usage held is among them (any
        other append made meanwhile, of no usage, is an ordinary one)."""
        held = self._held()
        saved = {_id_of(a) for a in aggregates}
        if not any(turn.usage_id in saved for turn in held):
            return store.record(*aggregates)
        if self.alone:
            for turn in held:
                if not turn._queue.settle(turn._epoch):
                    _alone.next = True
                    raise LostWithOthers("decided on a usage copy a failed append made stale")
            return store.record(*aggregates)
        if self.ended:
            raise RuntimeError("a turn on a usage appends once; its turn has ended")
        try:
            return self._queue.commit(
                store, store.collected(*aggregates), self._epoch, self._end_turn
            )
        except LostWithOthers:
            _alone.next = True
            raise

    def _held(self) -> list[Turn]:
        """This turn and those it is nested in."""
        held: list[Turn] = []
        turn: Turn | None = self
        while turn is not None:
            held.append(turn)
            turn = turn.outer
        return held

    def _end_turn(self) -> None:
        self.ended = True
        self._end()


_turn: ContextVar[Turn | None] = ContextVar("norn_usage_turn", default=None)
_alone = threading.local()


def current() -> Turn | None:
    """The turn the command in this context holds, if any (NornEventStore.append asks)."""
    return _turn.get()


def enter(turn: Turn) -> Token[Turn | None]:
    outer = _turn.get()
    if outer is not None:  # two usages held: both append alone, under both turns
        outer.alone = turn.alone = True
        turn.outer = outer
    return _turn.set(turn)


def leave(token: Token[Turn | None]) -> None:
    _turn.reset(token)


def alone_once() -> bool:
    """Whether this thread's next turn appends alone (it lost for another's sake), and
    from then on not."""
    alone = getattr(_alone, "next", False)
    _alone.next = False
    return alone


def _id_of(saved: Any) -> Any:
    """The id of an aggregate, or of the aggregate an event is of."""
    return getattr(saved, "id", None) or getattr(saved, "originator_id", None)
