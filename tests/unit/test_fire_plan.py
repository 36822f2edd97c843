"""A scheduler pass's plan for one job (application/fire_plan.py): given a job, its fire
state, `now` and whether its previous run is active, when planned, then exactly the fires,
skips and misses its misfire and overlap policies name, each due time dealt with once.
Fixed instants and a real Schedule; no clock, no sleeping.

The job fires every 15 minutes. Its scheduler last dealt with 10:00 on 2027-01-08 and is
back at 12:00:30: 10:15 to 11:45 (7 times) are missed, 12:00 is on time but 30 s late.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest

from application.fire_plan import (
    DEFAULT_GRACE,
    FirePlan,
    FireState,
    fire_run_id,
    next_due,
    plan_fires,
)
from application.jobs import schedule_of
from domain.job import JobSpec, JobTarget

PIPELINE = "00000000-0000-4000-8000-000000000001"
QUARTER = timedelta(minutes=15)
TICK = timedelta(microseconds=1)
MISFIRE = ("skip", "run_once", "run_all")
OVERLAP = ("allow", "skip", "queue_one", "cancel_previous")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


LAST_PASS = utc(2027, 1, 8, 10)
A_WEEK_BEFORE = utc(2027, 1, 1, 10)
BACK = utc(2027, 1, 8, 12, 0, 30)
NOON = utc(2027, 1, 8, 12)


def job(**fields: Any) -> JobSpec:
    return JobSpec(
        **{
            "name": "every-15",
            "target": JobTarget(pipeline_id=PIPELINE),
            "cron_expr": "*/15 * * * *",
            **fields,
        }
    )


def plan(
    spec: JobSpec,
    cursor: datetime,
    now: datetime,
    *,
    active: bool = False,
    waiting: datetime | None = None,
    jitter: float = 0.0,
    **options: Any,
) -> FirePlan:
    state = FireState(cursor=cursor, waiting_for=waiting)
    return plan_fires(spec, schedule_of(spec), jitter, state, now, active, **options)


def quarters(start: datetime, count: int) -> tuple[datetime, ...]:
    return tuple(start + i * QUARTER for i in range(count))


def drain(spec: JobSpec, cursor: datetime, now: datetime, scan_limit: int) -> tuple[Any, ...]:
    """Plan again at once while `more`: (fires, missed, skipped, passes, last state)."""
    state = FireState(cursor=cursor)
    fires: list[datetime] = []
    missed = skipped = passes = 0
    while True:
        made = plan_fires(spec, schedule_of(spec), 0.0, state, now, False, scan_limit=scan_limit)
        fires += made.fires
        missed += made.missed
        skipped += made.skipped
        passes += 1
        state = made.state
        if not made.more:
            return tuple(fires), missed, skipped, passes, state


# --- misfire ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cursor", "before"),
    [(LAST_PASS, 0), (A_WEEK_BEFORE, 7 * 96)],
    ids=["two-hour-downtime", "re-enabled-after-a-disabled-week"],
)
@pytest.mark.parametrize(
    ("policy", "max_catchup", "expected"),
    [
        ("skip", 10, lambda first: (NOON,)),
        ("run_once", 10, lambda first: (NOON - QUARTER, NOON)),
        ("run_all", 3, lambda first: (*quarters(first, 3), NOON)),
    ],
)
def test_the_misfire_policy_decides_what_runs_of_the_missed_times_and_counts_the_rest(
    cursor: datetime, before: int, policy: str, max_catchup: int, expected: Any
) -> None:
    # Given a job whose cursor is 2 hours (or a week and 2 hours) behind
    spec = job(misfire_policy=policy, max_catchup=max_catchup)
    # When the scheduler is back at 12:00:30
    made = plan(spec, cursor, BACK)
    # Then 12:00 fires, the policy's missed times with it, and every other one is missed
    fires = expected(cursor + QUARTER)
    assert made.fires == fires
    assert made.missed == before + 8 - len(fires)
    assert (made.skipped, made.late, made.more) == (0, len(fires), False)
    assert not made.cancel_previous
    assert made.state == FireState(cursor=NOON)


def test_run_all_runs_every_missed_time_when_max_catchup_allows() -> None:
    made = plan(job(misfire_policy="run_all", max_catchup=10), LAST_PASS, BACK)
    assert (made.fires, made.missed) == (quarters(LAST_PASS + QUARTER, 8), 0)


def test_the_default_policy_is_skip() -> None:
    made = plan(job(), LAST_PASS, BACK)
    assert (made.fires, made.missed) == ((NOON,), 7)


@pytest.mark.parametrize(
    ("now", "fires", "missed", "late"),
    [
        (NOON, (NOON,), 0, 0),
        (NOON + timedelta(seconds=1), (NOON,), 0, 0),
        (NOON + timedelta(seconds=1, microseconds=1), (NOON,), 0, 1),
        (NOON + DEFAULT_GRACE, (NOON,), 0, 1),
        (NOON + DEFAULT_GRACE + TICK, (), 1, 0),
    ],
    ids=["on-the-dot", "1s", "just-past-1s", "at-the-grace", "just-past-the-grace"],
)
def test_an_on_time_fire_is_late_only_past_one_second_and_missed_only_past_the_grace(
    now: datetime, fires: tuple[datetime, ...], missed: int, late: int
) -> None:
    made = plan(job(), NOON - QUARTER, now)
    assert (made.fires, made.missed, made.late) == (fires, missed, late)
    assert made.state.cursor == NOON


def test_the_grace_is_the_callers() -> None:
    spec = job()
    assert plan(spec, NOON - QUARTER, NOON + timedelta(minutes=5), grace=timedelta(minutes=5)).fires
    made = plan(spec, NOON - QUARTER, NOON + TICK, grace=timedelta(0))
    assert (made.fires, made.missed) == ((), 1)


@pytest.mark.parametrize(
    ("policy", "fires", "missed"),
    [
        ("skip", (), 6),
        ("run_once", (NOON,), 5),
        ("run_all", tuple(NOON - timedelta(seconds=s) for s in (50, 40, 30, 20, 10, 0)), 0),
    ],
)
def test_times_due_while_the_job_was_off_are_missed_even_within_the_grace(
    policy: str, fires: tuple[datetime, ...], missed: int
) -> None:
    # Every 10 s; off until enabled again at 12:00:05, the pass 0.5 s later. Its six times
    # from 11:59:10 to 12:00:00 were all within the 60 s grace, yet it was off for each.
    spec = job(cron_expr="* * * * * */10", misfire_policy=policy)
    enabled = NOON + timedelta(seconds=5)
    state = FireState(cursor=NOON - timedelta(seconds=55), active_since=enabled)
    made = plan_fires(spec, schedule_of(spec), 0.0, state, enabled + timedelta(seconds=0.5), False)
    assert (made.fires, made.missed) == (fires, missed)
    assert made.state.cursor == NOON
    assert made.state.active_since == enabled  # carried to the next pass
    # The times after the enabling are on time (within the grace, as ever).
    later = plan_fires(
        spec, schedule_of(spec), 0.0, made.state, NOON + timedelta(seconds=30), False
    )
    assert (later.fires, later.missed) == (
        tuple(NOON + timedelta(seconds=s) for s in (10, 20, 30)),
        0,
    )


def test_active_since_is_measured_against_time_plus_jitter() -> None:
    # With 15 s of jitter, nominal 11:59:40 fell due at 11:59:55, while the job was off;
    # 11:59:50 fell due at 12:00:05, after its enabling at noon.
    spec = job(cron_expr="* * * * * */10")
    state = FireState(cursor=NOON - timedelta(seconds=21), active_since=NOON)
    made = plan_fires(spec, schedule_of(spec), 15.0, state, NOON + timedelta(seconds=6), False)
    assert (made.fires, made.missed) == ((NOON - timedelta(seconds=10),), 1)


def test_a_scheduler_that_is_late_still_has_its_grace_after_an_enabling() -> None:
    # Enabled long ago: the grace alone decides, as without active_since.
    state = FireState(cursor=NOON - QUARTER, active_since=A_WEEK_BEFORE)
    made = plan_fires(job(), schedule_of(job()), 0.0, state, NOON + DEFAULT_GRACE, False)
    assert (made.fires, made.missed) == ((NOON,), 0)


def test_nothing_due_plans_nothing_and_keeps_the_state() -> None:
    state = FireState(cursor=NOON)
    made = plan_fires(job(), schedule_of(job()), 0.0, state, NOON + QUARTER - TICK, False)
    assert made == FirePlan((), 0, 0, 0, False, state, False)


def test_a_second_plan_at_the_same_instant_deals_with_nothing_again() -> None:
    spec = job(misfire_policy="run_all")
    first = plan(spec, LAST_PASS, BACK)
    again = plan_fires(spec, schedule_of(spec), 0.0, first.state, BACK, False)
    assert again == FirePlan((), 0, 0, 0, False, first.state, False)


# --- overlap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", OVERLAP)
def test_with_no_run_active_every_candidate_fires_whatever_the_overlap_policy(overlap: str) -> None:
    made = plan(job(misfire_policy="run_once", overlap_policy=overlap), LAST_PASS, BACK)
    assert (made.fires, made.skipped, made.cancel_previous) == ((NOON - QUARTER, NOON), 0, False)
    assert made.state.waiting_for is None


@pytest.mark.parametrize(
    ("overlap", "fires", "skipped", "waiting", "cancel"),
    [
        ("allow", (NOON - QUARTER, NOON), 0, None, False),
        ("skip", (), 2, None, False),
        ("queue_one", (), 1, NOON, False),
        ("cancel_previous", (NOON - QUARTER, NOON), 0, None, True),
    ],
)
def test_with_the_previous_run_active_the_overlap_policy_decides(
    overlap: str,
    fires: tuple[datetime, ...],
    skipped: int,
    waiting: datetime | None,
    cancel: bool,
) -> None:
    # Given a run_once job whose candidates are 11:45 (caught up) and 12:00
    spec = job(misfire_policy="run_once", overlap_policy=overlap)
    # When planned while its previous run is still active
    made = plan(spec, LAST_PASS, BACK, active=True)
    # Then the policy decides; the misfire count is the same whatever it decides
    assert (made.fires, made.skipped, made.cancel_previous) == (fires, skipped, cancel)
    assert made.state == FireState(cursor=NOON, waiting_for=waiting)
    assert made.missed == 6


def test_queue_one_keeps_at_most_one_waiting_and_fires_it_first_once_the_previous_ends() -> None:
    spec = job(overlap_policy="queue_one")
    schedule = schedule_of(spec)
    # Given a run active at 12:00: 12:00 waits
    first = plan_fires(spec, schedule, 0.0, FireState(NOON - QUARTER), NOON, True)
    assert (first.fires, first.skipped, first.state) == ((), 0, FireState(NOON, NOON))
    # When 12:15 comes while it is still active: 12:15 is skipped, 12:00 still waits
    second = plan_fires(spec, schedule, 0.0, first.state, NOON + QUARTER, True)
    assert (second.fires, second.skipped, second.state) == ((), 1, FireState(NOON + QUARTER, NOON))
    # And nothing due while it is still active changes nothing
    idle = plan_fires(spec, schedule, 0.0, second.state, NOON + 2 * QUARTER - TICK, True)
    assert idle == FirePlan((), 0, 0, 0, False, second.state, False)
    # When the previous run has ended, before the next time: 12:00 fires (late) alone
    ended = NOON + timedelta(minutes=20)
    third = plan_fires(spec, schedule, 0.0, second.state, ended, False)
    assert (third.fires, third.late, third.state) == ((NOON,), 1, FireState(NOON + QUARTER))


def test_a_waiting_fire_goes_before_the_times_due_in_the_same_pass() -> None:
    spec = job(misfire_policy="run_once", overlap_policy="queue_one")
    made = plan(spec, LAST_PASS, BACK, waiting=LAST_PASS)
    assert made.fires == (LAST_PASS, NOON - QUARTER, NOON)
    assert (made.missed, made.late, made.state) == (6, 3, FireState(NOON))


def test_with_one_waiting_every_new_candidate_is_skipped() -> None:
    spec = job(misfire_policy="run_once", overlap_policy="queue_one")
    made = plan(spec, LAST_PASS, BACK, active=True, waiting=LAST_PASS)
    assert (made.fires, made.skipped, made.missed) == ((), 2, 6)
    assert made.state == FireState(NOON, LAST_PASS)


def test_cancel_previous_asks_nothing_when_nothing_fires() -> None:
    made = plan(job(overlap_policy="cancel_previous"), NOON, NOON + TICK, active=True)
    assert (made.fires, made.cancel_previous) == ((), False)


# --- jitter ----------------------------------------------------------------------------------


def test_jitter_delays_due_ness_and_late_and_grace_are_measured_from_time_plus_jitter() -> None:
    spec = job()
    due_at = NOON + timedelta(seconds=90)
    cursor = NOON - QUARTER
    assert plan(spec, cursor, due_at - TICK, jitter=90.0).state.cursor == cursor
    assert plan(spec, cursor, due_at - TICK, jitter=90.0).fires == ()
    at = plan(spec, cursor, due_at, jitter=90.0)
    assert (at.fires, at.late, at.state.cursor) == ((NOON,), 0, NOON)
    assert plan(spec, cursor, due_at + timedelta(seconds=1), jitter=90.0).late == 0
    assert plan(spec, cursor, due_at + timedelta(seconds=1) + TICK, jitter=90.0).late == 1
    assert plan(spec, cursor, due_at + DEFAULT_GRACE, jitter=90.0).missed == 0
    past = plan(spec, cursor, due_at + DEFAULT_GRACE + TICK, jitter=90.0)
    assert (past.fires, past.missed) == ((), 1)


def test_a_fractional_jitter_from_the_schedule_works_the_same() -> None:
    spec = job(jitter_seconds=600)
    jitter = schedule_of(spec).jitter("job-1")
    assert 0 < jitter < 600
    due_at = NOON + timedelta(seconds=jitter)
    assert plan(spec, NOON - QUARTER, due_at - TICK, jitter=jitter).fires == ()
    assert plan(spec, NOON - QUARTER, due_at, jitter=jitter).fires == (NOON,)


# --- the calendar's bounds -------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "fires", "missed"), [("run_all", 3, 0), ("skip", 0, 3)])
def test_start_at_and_end_at_bound_the_due_times(policy: str, fires: int, missed: int) -> None:
    start, end = utc(2027, 1, 8, 11), utc(2027, 1, 8, 11, 30)
    spec = job(start_at=start, end_at=end, misfire_policy=policy)
    made = plan(spec, LAST_PASS, BACK)
    assert made.fires == quarters(start, 3)[:fires]
    assert (made.missed, made.state.cursor) == (missed, end)
    assert next_due(schedule_of(spec), 0.0, made.state) is None


# --- scanning in parts -----------------------------------------------------------------------


def test_a_scan_stops_at_its_limit_and_the_next_plan_goes_on_without_counting_twice() -> None:
    spec = job()
    # Given a week and 2 hours behind (680 due times), scanned 100 at a time
    first = plan(spec, A_WEEK_BEFORE, BACK, scan_limit=100)
    # Then the first 100 are missed, and the cursor is the last of them
    assert (first.fires, first.missed, first.more) == ((), 100, True)
    assert first.state.cursor == A_WEEK_BEFORE + 100 * QUARTER
    second = plan_fires(spec, schedule_of(spec), 0.0, first.state, BACK, False, scan_limit=100)
    assert (second.missed, second.state.cursor) == (100, A_WEEK_BEFORE + 200 * QUARTER)
    # And all of them, planned again at once while `more`, are the one scan's result
    assert drain(spec, A_WEEK_BEFORE, BACK, 100)[:4] == ((NOON,), 679, 0, 7)


def test_run_all_catches_up_max_catchup_over_a_window_scanned_in_parts() -> None:
    spec = job(misfire_policy="run_all", max_catchup=10)
    schedule = schedule_of(spec)
    first = plan_fires(spec, schedule, 0.0, FireState(A_WEEK_BEFORE), BACK, False, scan_limit=4)
    assert (first.fires, first.state.caught_up) == (quarters(A_WEEK_BEFORE + QUARTER, 4), 4)
    fires, missed, _, _, state = drain(spec, A_WEEK_BEFORE, BACK, 4)
    assert fires == (*quarters(A_WEEK_BEFORE + QUARTER, 10), NOON)
    assert (missed, state) == (669, FireState(NOON))


def test_run_once_leaves_the_last_scanned_time_to_the_next_scan_while_the_window_goes_on() -> None:
    spec = job(misfire_policy="run_once")
    first = plan(spec, A_WEEK_BEFORE, BACK, scan_limit=100)
    assert (first.fires, first.missed, first.more) == ((), 99, True)
    assert first.state.cursor == A_WEEK_BEFORE + 99 * QUARTER
    assert drain(spec, A_WEEK_BEFORE, BACK, 100)[:2] == ((NOON - QUARTER, NOON), 678)


@pytest.mark.parametrize("policy", MISFIRE)
@pytest.mark.parametrize("scan_limit", [2, 3, 7, 679, 680, 681])
def test_scanning_in_parts_plans_what_one_scan_plans(policy: str, scan_limit: int) -> None:
    spec = job(misfire_policy=policy, max_catchup=5)
    whole = drain(spec, A_WEEK_BEFORE, BACK, 10_000)
    assert whole[3] == 1
    assert drain(spec, A_WEEK_BEFORE, BACK, scan_limit)[:3] == whole[:3]


def test_a_scan_limit_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="scan_limit"):
        plan(job(), LAST_PASS, BACK, scan_limit=1)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="now"):
        plan(job(), LAST_PASS, BACK.replace(tzinfo=None))


# --- next_due and fire_run_id ----------------------------------------------------------------


def test_next_due_is_the_next_nominal_time_plus_jitter() -> None:
    schedule = schedule_of(job())
    assert next_due(schedule, 0.0, FireState(NOON)) == NOON + QUARTER
    assert next_due(schedule, 90.0, FireState(NOON - TICK)) == NOON + timedelta(seconds=90)
    assert next_due(schedule, 90.0, FireState(NOON)) == NOON + QUARTER + timedelta(seconds=90)


def test_next_due_follows_start_at_and_is_none_past_end_at() -> None:
    later = utc(2027, 2, 1)
    assert next_due(schedule_of(job(start_at=later)), 0.0, FireState(NOON)) == later
    assert next_due(schedule_of(job(end_at=NOON)), 0.0, FireState(NOON)) is None
    assert next_due(schedule_of(job(end_at=NOON)), 0.0, FireState(NOON - TICK)) == NOON


def test_fire_run_id_is_deterministic_per_job_and_time_and_ignores_the_timezone() -> None:
    run_id = fire_run_id("job-1", NOON)
    assert isinstance(run_id, UUID) and run_id.version == 5
    assert fire_run_id("job-1", NOON) == run_id
    assert fire_run_id("job-2", NOON) != run_id
    assert fire_run_id("job-1", NOON + QUARTER) != run_id
    new_york = NOON.astimezone(timezone(timedelta(hours=-5)))
    assert fire_run_id("job-1", new_york) == run_id
    with pytest.raises(ValueError, match="scheduled_for"):
        fire_run_id("job-1", NOON.replace(tzinfo=None))


# --- every due time accounted once -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_every_nominal_time_is_fired_skipped_missed_or_waiting_exactly_once(seed: int) -> None:
    # Given a random job, passes at random instants (some after hours of downtime), and a
    # previous run that lasts a random while after each fire
    rng = random.Random(seed)
    spec = job(
        cron_expr=rng.choice(["*/15 * * * *", "*/5 * * * *", "0 * * * *", "7,8,9 * * * *"]),
        misfire_policy=rng.choice(MISFIRE),
        overlap_policy=rng.choice(OVERLAP),
        max_catchup=rng.randint(1, 4),
        jitter_seconds=rng.choice([0, 30, 600]),
    )
    schedule = schedule_of(spec)
    jitter = schedule.jitter(f"job-{seed}")
    grace = rng.choice([timedelta(0), DEFAULT_GRACE, timedelta(minutes=20)])
    start = utc(2027, 3, 1)
    state, now, run_ends = FireState(cursor=start), start, start
    fired: list[datetime] = []
    skipped = missed = 0
    for _ in range(50):
        seconds, minutes, downtime = rng.randint(1, 90), rng.randint(1, 40), rng.randint(1, 6)
        now += rng.choice(
            [timedelta(seconds=seconds), timedelta(minutes=minutes), timedelta(hours=downtime)]
        )
        more = True
        while more:  # plan again at once while `more`
            active = now < run_ends
            made = plan_fires(
                spec,
                schedule,
                jitter,
                state,
                now,
                active,
                grace=grace,
                scan_limit=rng.randint(2, 9),
            )
            # Then each plan keeps the rules' shape
            assert list(made.fires) == sorted(set(made.fires))
            assert all(t + timedelta(seconds=jitter) <= now for t in made.fires)
            assert made.state.cursor >= state.cursor
            assert 0 <= made.late <= len(made.fires)
            assert not made.cancel_previous or (active and spec.overlap_policy == "cancel_previous")
            assert made.skipped == 0 or active
            if made.cancel_previous:
                run_ends = now
            if made.fires:
                lasts = rng.choice([0, 30, 20 * 60, 3 * 3600])
                run_ends = max(run_ends, now + timedelta(seconds=lasts))
            fired += made.fires
            skipped += made.skipped
            missed += made.missed
            state, more = made.state, made.more
        # And every time due by now has been dealt with
        offset = timedelta(seconds=jitter)
        assert schedule.fires_between(state.cursor + TICK, now - offset, 1) == []
    # Then every nominal time up to the cursor is fired, skipped, missed or waiting: once
    dealt = schedule.fires_between(start + TICK, state.cursor, 1_000_000)
    waiting = [] if state.waiting_for is None else [state.waiting_for]
    assert len(fired) == len(set(fired))
    assert set(fired) | set(waiting) <= set(dealt)
    assert not set(fired) & set(waiting)
    assert len(fired) + skipped + missed + len(waiting) == len(dealt)
