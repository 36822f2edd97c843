"""The projections one runner keeps (projections/runner.py): their positions, and a
failure kept to the member that failed.

A runner applies each batch to all its members side by side. When some fail and others
do not, the batch goes on for the others (and is acked), and each member that failed is
set aside: it catches up from the event store on its own, after a backoff, until that
succeeds, then follows the runner's batches again, skipping by position what it read
from the store. So an event that one read model cannot apply holds back that read model
(health shows it stuck), not every read model of the process. When every member fails
(the database is down, say) the batch fails as a whole, as with a runner of one
projection: the runner holds it, backs off and catches up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from infrastructure.envelope import CloudEvent
from infrastructure.supervision import Backoff
from projections.positions import Connections, PositionKeeper, replay_from_store

log = logging.getLogger(__name__)

MEMBER_RETRY = Backoff(first=0.5, cap=30.0)
"""Pauses before a member that failed tries to catch up from the store again."""
_MIN_WAIT = 0.05  # a NATS fetch needs a little time to expire server-side


@dataclass
class _SetAside:
    keeper: PositionKeeper
    failures: int
    next_try: float  # monotonic


class Members:
    def __init__(self, keepers: Sequence[PositionKeeper], retry: Backoff = MEMBER_RETRY) -> None:
        self.keepers = list(keepers)
        self._retry = retry
        self._set_aside: dict[str, _SetAside] = {}

    @property
    def passed(self) -> int:
        """The lowest position the members that follow have passed (all members' when
        none follows)."""
        following = self._following() or self.keepers
        return min(keeper.passed for keeper in following)

    @property
    def set_aside(self) -> list[str]:
        return sorted(self._set_aside)

    @property
    def ahead(self) -> bool:
        """Whether a member has passed a position that its tracking row does not hold."""
        return any(keeper.persist_in() is not None for keeper in self.keepers)

    def idle_at_most(self, seconds: float) -> float:
        """How long the runner may wait for events: until a position is due to be
        persisted, or a member set aside is due to try again."""
        wait = min(keeper.idle_at_most(seconds) for keeper in self.keepers)
        now = time.monotonic()
        tries = (max(_MIN_WAIT, aside.next_try - now) for aside in self._set_aside.values())
        return min([wait, *tries])

    async def persist(self, source: Connections, *, now: bool = False) -> None:
        # Keepers sharing the process's sessions write together: the first due one
        # writes them all and the others find nothing left to do.
        for keeper in self.keepers:
            await keeper.persist(source, now=now)

    async def apply(self, source: Connections, events: Sequence[CloudEvent]) -> None:
        """Apply a batch to every member that follows: those with work in it in one
        transaction (one commit for the batch, not one per read model); if that fails,
        each on its own, as many at once as `source` has connections, so that a failure
        stays with the member that failed. Raises when all of them failed."""
        following = self._following()
        busy = [keeper for keeper in following if keeper.has_work(events)]
        if len(busy) > 1:
            try:
                await busy[0].apply_with(busy[1:], source, events)
            except Exception as error:
                log.debug("batch applied together failed (%r): applied one by one", error)
            else:
                for keeper in following:
                    if keeper not in busy:
                        await keeper.apply(source, events)  # only moves its position
                self._settle([(keeper, 0) for keeper in following])
                return
        outcomes = await asyncio.gather(
            *(keeper.apply(source, events) for keeper in following), return_exceptions=True
        )
        self._settle(list(zip(following, outcomes, strict=True)))

    async def catch_up(self, source: Connections, *, batch_size: int) -> int:
        """Every member from the store (after a bind, a gap, a failed batch); a member
        that fails is set aside, unless all fail: then it raises. Answers how many
        events were read."""
        outcomes: list[tuple[PositionKeeper, int | BaseException]] = []
        for keeper in self.keepers:
            try:
                read: int | BaseException = await replay_from_store(
                    source, keeper.projection, batch_size=batch_size, keeper=keeper
                )
            except Exception as error:
                read = error
            outcomes.append((keeper, read))
        self._settle(outcomes)
        return sum(read for _, read in outcomes if isinstance(read, int))

    async def retry_set_aside(self, source: Connections, *, batch_size: int) -> None:
        """Members set aside whose pause is over try to catch up from the store."""
        now = time.monotonic()
        for name, aside in list(self._set_aside.items()):
            if aside.next_try > now:
                continue
            try:
                await replay_from_store(
                    source, aside.keeper.projection, batch_size=batch_size, keeper=aside.keeper
                )
            except Exception as error:
                self._put_aside(aside.keeper, error)
            else:
                del self._set_aside[name]
                log.info("projection %s: caught up from the store; following again", name)

    def _following(self) -> list[PositionKeeper]:
        return [k for k in self.keepers if k.projection.name not in self._set_aside]

    def _settle(self, outcomes: Sequence[tuple[PositionKeeper, object]]) -> None:
        failed = [(k, o) for k, o in outcomes if isinstance(o, BaseException)]
        for _, error in failed:
            if not isinstance(error, Exception):
                raise error  # cancelled: the runner is stopping
        if failed and len(failed) == len(outcomes):
            raise failed[0][1]  # type: ignore[misc]  # nothing applied: the batch failed
        for keeper, outcome in outcomes:
            if isinstance(outcome, Exception):
                self._put_aside(keeper, outcome)
            else:
                self._set_aside.pop(keeper.projection.name, None)

    def _put_aside(self, keeper: PositionKeeper, error: Exception) -> None:
        name = keeper.projection.name
        before = self._set_aside.get(name)
        failures = before.failures + 1 if before is not None else 1
        delay = self._retry.delay(failures)
        self._set_aside[name] = _SetAside(keeper, failures, time.monotonic() + delay)
        log.warning(
            "projection %s: could not apply (%r); set aside, catching up from the store "
            "in %.1fs while the others go on",
            name,
            error,
            delay,
            exc_info=error if failures == 1 else None,
        )
