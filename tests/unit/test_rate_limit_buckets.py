"""One process's token buckets (infrastructure/rate_limit.py), on a clock the test moves:
burst, refusal and Retry-After, refill at the hourly rate up to the burst, the headers'
numbers, and the bookkeeping with the shared bucket (what a sync sends, what it
confirms, what a failed one keeps, the MAX_UNCONFIRMED cap). No I/O."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from infrastructure.rate_limit import (
    MAX_UNCONFIRMED,
    SYNC_INTERVAL,
    SYNC_SOON,
    Change,
    LocalBuckets,
    RateDecision,
    RateLimit,
)

SLOW = RateLimit(per_hour=36, burst=3)  # a token every 100 s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def buckets(clock: Clock) -> LocalBuckets:
    return LocalBuckets(clock)


def hit(buckets: LocalBuckets, limit: RateLimit = SLOW, key: str = "k") -> RateDecision:
    decision = buckets.decide(key, limit)
    assert decision is not None, "expected a decision, not a wait"
    return decision


def sync(
    buckets: LocalBuckets, shared: dict[str, float], *, give_back: bool = False
) -> list[Change]:
    """What a sync against a shared bucket holding `shared` does (as its SQL does,
    infrastructure/rate_limit_sync.py): take what it consumed off, add what it gives back
    (up to the burst), grant at most half of what is left, and confirm the result (refill
    in the shared bucket is the test's business)."""
    changes = buckets.take_changes(give_back=give_back)
    buckets.confirm(*answer(changes, shared))
    return changes


def answer(
    changes: list[Change], shared: dict[str, float]
) -> tuple[dict[str, float], dict[str, int]]:
    """The shared bucket's side of a sync, as its SQL does: the levels and the grants."""
    granted = {}
    for change in changes:
        burst = change.limit.burst
        level = min(burst, shared.get(change.key, burst) + change.back) - change.taken
        granted[change.key] = min(change.want, max(0, math.floor(level / 2)))
        shared[change.key] = level - granted[change.key]
    return {c.key: shared[c.key] for c in changes}, granted


def test_a_full_bucket_admits_the_burst_then_refuses(buckets: LocalBuckets) -> None:
    admitted = [hit(buckets) for _ in range(3)]
    assert [(d.allowed, d.remaining, d.retry_after) for d in admitted] == [
        (True, 2, 0),
        (True, 1, 0),
        (True, 0, 0),
    ]
    # X-RateLimit-Reset: seconds until a request is allowed again (0 while one is).
    assert [d.reset_after for d in admitted] == [0, 0, 100]
    refused = hit(buckets)
    assert (refused.allowed, refused.limit, refused.remaining) == (False, 36, 0)
    assert (refused.retry_after, refused.reset_after) == (100, 100)


def test_retry_after_counts_down_and_refusals_take_nothing(
    buckets: LocalBuckets, clock: Clock
) -> None:
    limit = RateLimit(per_hour=36, burst=1)
    assert hit(buckets, limit).allowed
    clock.now += 60
    for _ in range(5):  # hammering while refused must not push the next token away
        refused = hit(buckets, limit)
        assert (refused.allowed, refused.retry_after) == (False, 40)
    clock.now += 39.5
    assert hit(buckets, limit).retry_after == 1  # half a second left rounds up
    clock.now += 0.5
    assert hit(buckets, limit).allowed
    assert buckets.unconfirmed("k") == 2  # the two admitted, none of the refused


def test_the_bucket_refills_at_the_hourly_rate_up_to_the_burst(
    buckets: LocalBuckets, clock: Clock
) -> None:
    for _ in range(3):
        hit(buckets)
    clock.now += 250  # two and a half tokens back
    assert [hit(buckets).allowed for _ in range(3)] == [True, True, False]
    clock.now += 3600  # an hour idle: full, not more than full
    decisions = [hit(buckets) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[0].remaining == 2
    assert decisions[0].reset_after == 0  # two tokens left: the next is allowed now


def test_buckets_are_per_key_and_a_new_limit_applies_at_once(buckets: LocalBuckets) -> None:
    assert hit(buckets, key="user:a").allowed
    other = hit(buckets, key="api_key:a")
    assert (other.allowed, other.remaining) == (True, 2)
    # The tenant moved to a smaller plan: two tokens left, capped at the new burst.
    smaller = RateLimit(per_hour=36, burst=1)
    assert hit(buckets, smaller, key="user:a").remaining == 0
    refused = hit(buckets, smaller, key="user:a")
    assert (refused.allowed, refused.reset_after) == (False, 100)  # a token in 100 s


def test_a_process_admits_at_most_max_unconfirmed_before_a_sync(
    buckets: LocalBuckets, clock: Clock
) -> None:
    roomy = RateLimit(per_hour=100_000, burst=1000)
    for _ in range(MAX_UNCONFIRMED):
        assert hit(buckets, roomy).allowed
    assert buckets.decide("k", roomy) is None  # wait for the shared bucket
    assert buckets.decide("other", roomy) is not None  # other principals are not held
    clock.now += SYNC_INTERVAL  # ten in an interval
    shared: dict[str, float] = {}
    # and it asks to reserve twice that for its next interval (see the tests below)
    assert sync(buckets, shared)[0] == Change("k", MAX_UNCONFIRMED, roomy, want=20)
    assert hit(buckets, roomy).remaining == 1000 - MAX_UNCONFIRMED - 1


def test_requests_during_a_sync_stay_unconfirmed_until_the_next(buckets: LocalBuckets) -> None:
    roomy = RateLimit(per_hour=100_000, burst=1000)
    for _ in range(4):
        hit(buckets, roomy)
    in_flight = buckets.take_changes()
    for _ in range(MAX_UNCONFIRMED - 4):  # admitted while the sync is on its way
        assert hit(buckets, roomy).allowed
    assert buckets.decide("k", roomy) is None  # in flight counts until confirmed
    buckets.confirm({"k": 1000.0 - 4})
    assert buckets.unconfirmed("k") == MAX_UNCONFIRMED - 4
    assert [c.taken for c in in_flight] == [4]
    assert [c.taken for c in buckets.take_changes()] == [MAX_UNCONFIRMED - 4]
    # The view: the shared level less what the shared bucket has not seen yet.
    assert hit(buckets, roomy).remaining == 1000 - MAX_UNCONFIRMED - 1


def test_the_shared_level_replaces_the_local_view(buckets: LocalBuckets, clock: Clock) -> None:
    """Another process took tokens meanwhile: the confirmed level says so, and this
    process refuses from then on; a debt is refilled before anything is admitted."""
    limit = RateLimit(per_hour=36, burst=5)
    hit(buckets, limit)
    buckets.take_changes()
    buckets.confirm({"k": -2.0})  # others over-took: two tokens of debt
    refused = hit(buckets, limit)
    assert (refused.allowed, refused.retry_after, refused.reset_after) == (False, 300, 300)
    clock.now += 300
    assert hit(buckets, limit).allowed


def test_a_failed_sync_keeps_what_it_carried(buckets: LocalBuckets) -> None:
    for _ in range(SYNC_SOON - 1):
        hit(buckets, RateLimit(3600, 100))
    assert not buckets.urgent
    hit(buckets, RateLimit(3600, 100))
    assert buckets.urgent  # several unsynced: sync now rather than at the interval
    first = buckets.take_changes()
    assert not buckets.urgent and not buckets.has_unsynced()
    buckets.abandon()
    assert buckets.urgent and buckets.has_unsynced()
    assert [c.taken for c in buckets.take_changes()] == [c.taken for c in first]
    for _ in range(MAX_UNCONFIRMED - SYNC_SOON):
        hit(buckets, RateLimit(3600, 100))
    assert buckets.decide("k", RateLimit(3600, 100)) is None  # the cap holds meanwhile


def test_an_unanswered_key_is_sent_again(buckets: LocalBuckets) -> None:
    hit(buckets, key="a")
    hit(buckets, key="b")
    buckets.take_changes()
    buckets.confirm({"a": 2.0})
    assert [(c.key, c.taken) for c in buckets.take_changes()] == [("b", 1)]


def test_only_full_settled_buckets_are_forgotten(buckets: LocalBuckets, clock: Clock) -> None:
    hit(buckets, key="settled")
    hit(buckets, key="unsynced")
    sync_only = buckets.take_changes()
    buckets.confirm({"settled": 2.0})
    hit(buckets, key="unsynced")
    assert [c.key for c in sync_only] == ["settled", "unsynced"]
    assert buckets.forget_full() == 0  # neither is full yet
    clock.now += 100
    assert buckets.forget_full() == 1  # "settled" is full again; "unsynced" is not sent
    assert len(buckets) == 1 and buckets.unconfirmed("unsynced") == 2


# --- reservations: a busy principal's tokens taken ahead, so it needs no sync per few -----

ROOMY = RateLimit(per_hour=100_000, burst=1000)


@pytest.fixture
def later(clock: Clock) -> Callable[[float], None]:
    def move(seconds: float = SYNC_INTERVAL) -> None:
        clock.now += seconds

    return move


def busy(
    buckets: LocalBuckets, shared: dict[str, float], requests: int, later: Callable[[], None]
) -> None:
    """`requests` admitted over an interval, then a sync."""
    for _ in range(requests):
        assert hit(buckets, ROOMY).allowed
    later()
    sync(buckets, shared)


def test_a_busy_principal_is_admitted_from_its_reservation_with_nothing_to_confirm(
    buckets: LocalBuckets, later: Callable[[], None]
) -> None:
    shared: dict[str, float] = {}
    busy(buckets, shared, SYNC_SOON, later)
    assert shared["k"] == 1000 - SYNC_SOON - 2 * SYNC_SOON  # reserved: taken off at once
    for _ in range(2 * SYNC_SOON):
        assert hit(buckets, ROOMY).allowed
    assert buckets.unconfirmed("k") == 0 and not buckets.urgent
    # Used up: back to admitting unconfirmed, up to the cap, as before.
    for _ in range(MAX_UNCONFIRMED):
        assert hit(buckets, ROOMY).allowed
    assert buckets.decide("k", ROOMY) is None


def test_the_reservation_follows_the_demand_and_an_idle_one_goes_back(
    buckets: LocalBuckets, later: Callable[[], None]
) -> None:
    shared: dict[str, float] = {}
    busy(buckets, shared, 8, later)  # 16 reserved for the next interval
    busy(buckets, shared, 24, later)  # 16 from the reservation, 8 unconfirmed: 48 reserved
    later()
    [change] = sync(buckets, shared)  # idle since: all 48 go back
    assert (change.taken, change.want, change.back) == (0, 0, 48)
    assert shared["k"] == 1000 - 32
    assert not buckets.has_unsynced()  # nothing held: no more syncs


def test_a_reservation_takes_at_most_half_of_the_shared_level(
    buckets: LocalBuckets, later: Callable[[], None]
) -> None:
    limit = RateLimit(per_hour=36, burst=20)
    shared: dict[str, float] = {}
    for _ in range(SYNC_SOON):
        hit(buckets, limit)
    later()
    sync(buckets, shared)
    assert shared["k"] == 8  # 15 left: 7 reserved, not the 10 asked for
    for _ in range(7):
        assert hit(buckets, limit).allowed
    assert buckets.unconfirmed("k") == 0
    # A level at zero (or in debt) grants nothing.
    shared["k"] = 0
    later()
    sync(buckets, shared)
    assert shared["k"] == 0 and not hit(buckets, limit).allowed


def test_stopping_gives_every_reservation_back(
    buckets: LocalBuckets, later: Callable[[], None]
) -> None:
    shared: dict[str, float] = {}
    busy(buckets, shared, SYNC_SOON, later)
    [change] = sync(buckets, shared, give_back=True)
    assert (change.want, change.back) == (0, 2 * SYNC_SOON)
    assert shared["k"] == 1000 - SYNC_SOON


def test_a_failed_sync_forfeits_what_it_gave_back_and_what_it_asked_for(
    buckets: LocalBuckets, later: Callable[[], None]
) -> None:
    """The failed statement may have committed after all: the tokens given back may be
    in the shared level again, so using them could pass the bound; refusing sooner cannot."""
    shared: dict[str, float] = {}
    busy(buckets, shared, SYNC_SOON, later)
    later()
    [change] = buckets.take_changes()  # idle for an interval: all ten go back
    assert change.back == 2 * SYNC_SOON
    buckets.abandon()
    for _ in range(MAX_UNCONFIRMED):  # unconfirmed ones only: none reserved any more
        assert hit(buckets, ROOMY).allowed
    assert buckets.decide("k", ROOMY) is None


def test_a_bucket_holding_a_reservation_is_not_forgotten(
    buckets: LocalBuckets, clock: Clock, later: Callable[[], None]
) -> None:
    shared: dict[str, float] = {}
    busy(buckets, shared, SYNC_SOON, later)
    clock.now += 3600
    assert buckets.forget_full() == 0
    sync(buckets, shared)  # idle: given back
    clock.now += 3600  # and full again
    assert buckets.forget_full() == 1


def test_a_sync_that_comes_early_keeps_the_reservation_the_rate_needs(
    buckets: LocalBuckets, later: Callable[[float], None]
) -> None:
    """A sync half an interval after the last (its reservation ran out, or another
    principal's requests made it urgent) sees a short stretch: sized on it, the
    reservation would shrink and run out the sooner next time. It keeps what it holds."""
    shared: dict[str, float] = {}
    for _ in range(10):
        hit(buckets, ROOMY)
    later(SYNC_INTERVAL)
    sync(buckets, shared)  # 20 reserved
    for _ in range(5):
        hit(buckets, ROOMY)
    later(SYNC_INTERVAL / 2)
    [change] = sync(buckets, shared)
    assert (change.want, change.back) == (0, 0)  # 15 left: kept till a regular sync


def test_what_a_process_admits_while_its_sync_is_out_is_paid_from_the_grant_first(
    buckets: LocalBuckets,
) -> None:
    """The shared bucket grants from a level that does not know of the requests this
    process admitted while the sync was out: the grant pays for those first. (Found by a
    full-suite run: a lone process admitted its burst plus one.)"""
    limit = RateLimit(per_hour=40, burst=8)
    shared: dict[str, float] = {}
    for _ in range(SYNC_SOON):
        hit(buckets, limit)
    changes = buckets.take_changes()  # asks to reserve 10
    for _ in range(3):  # while it is out: the view's last three tokens
        assert hit(buckets, limit).allowed
    assert not hit(buckets, limit).allowed
    levels, granted = answer(changes, shared)  # 8 - 5 = 3 left: one granted
    assert granted == {"k": 1}
    buckets.confirm(levels, granted)
    assert not hit(buckets, limit).allowed  # the grant paid for one of the three
    sync(buckets, shared)
    assert shared["k"] == 0  # eight admitted, eight taken


def test_a_plan_change_applies_at_once_to_a_reservation_too(
    buckets: LocalBuckets, later: Callable[[], None]
) -> None:
    shared: dict[str, float] = {}
    busy(buckets, shared, SYNC_SOON, later)  # 10 reserved under ROOMY
    smaller = RateLimit(per_hour=36, burst=3)
    assert [hit(buckets, smaller).allowed for _ in range(4)] == [True, True, True, False]
    later()
    [change] = sync(buckets, shared)
    assert change.back == 2 * SYNC_SOON  # the reservation goes back
    assert shared["k"] == 3 - 3  # the new burst, less the three admitted under it


def test_a_bucket_giving_back_after_a_plan_change_is_not_forgotten_before_its_sync(
    buckets: LocalBuckets, clock: Clock, later: Callable[[], None]
) -> None:
    shared: dict[str, float] = {}
    busy(buckets, shared, SYNC_SOON, later)
    hit(buckets, RateLimit(per_hour=36, burst=3))  # the reservation is no longer held
    clock.now += 3600
    assert buckets.forget_full() == 0
    [change] = sync(buckets, shared)
    assert change.back == 2 * SYNC_SOON
    clock.now += 3600
    assert buckets.forget_full() == 1
