"""Commands that lost a race: tried again, a bounded number of times, with growing random
pauses (docs/architecture.md §3). Only commands whose failed append wrote nothing and
that build their events afresh are retried; an If-Match that was already stale is
answered at once."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from application.errors import VersionConflict

T = TypeVar("T")

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
client that did nothing wrong). Usage shards (one per process) made such races rare:
they remain for two processes on one shard and at the quota's edge."""
RETRY_PAUSE_CAP = 0.1


def pause_after(lost: int) -> None:
    """The pause after the `lost`-th lost race in a row (from 0)."""
    time.sleep(random.uniform(0, min(RETRY_PAUSE_CAP, RETRY_PAUSE * 2**lost)))  # noqa: S311


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
        pause_after(lost)
    return attempt()
