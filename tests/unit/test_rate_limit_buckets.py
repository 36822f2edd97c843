"""One process's token buckets (infrastructure/rate_limit.py), on a clock the test moves:
burst, refusal and Retry-After, refill at the hourly rate up to the burst, the headers'
numbers, and the bookkeeping with the shared bucket (what a sync sends, what it
confirms, what a failed one keeps, the MAX_UNCONFIRMED cap). No I/O."""

from __future__ import annotations

import pytest

from infrastructure.rate_limit import (
    MAX_UNCONFIRMED,
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


def sync(buckets: LocalBuckets, shared: dict[str, float]) -> list[Change]:
    """What a sync against a shared bucket holding `shared` does: take what it consumed
    off, and confirm the result (refill in the shared bucket is the test's business)."""
    changes = buckets.take_changes()
    for change in changes:
        shared[change.key] = shared.get(change.key, change.limit.burst) - change.taken
    buckets.confirm({c.key: shared[c.key] for c in changes})
    return changes


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
    buckets: LocalBuckets,
) -> None:
    roomy = RateLimit(per_hour=100_000, burst=1000)
    for _ in range(MAX_UNCONFIRMED):
        assert hit(buckets, roomy).allowed
    assert buckets.decide("k", roomy) is None  # wait for the shared bucket
    assert buckets.decide("other", roomy) is not None  # other principals are not held
    shared: dict[str, float] = {}
    assert sync(buckets, shared)[0] == Change("k", MAX_UNCONFIRMED, roomy)
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
    assert buckets.take_changes() == first
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
