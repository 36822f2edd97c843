"""The calendar of scheduled jobs (application/schedule.py): given a schedule, when asked
for its fire times after or between fixed instants, then exactly the times the module
docstring's DST rules name, in UTC, ascending, each once. Pure computation: no clock, no
sleeping.

The 2027 transitions used here, as zoneinfo has them (checked by the first test):
America/New_York     03-14 07:00Z 02:00 EST -> 03:00 EDT;  11-07 06:00Z 02:00 EDT -> 01:00 EST
Europe/Berlin        03-28 01:00Z 02:00 CET -> 03:00 CEST; 10-31 01:00Z 03:00 CEST -> 02:00 CET
Australia/Lord_Howe  10-02 15:30Z 02:00 -> 02:30 (+11);    04-03 15:00Z 02:00 -> 01:30 (+10:30)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from application.schedule import Schedule, ScheduleError

NEW_YORK = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def refused(**fields: Any) -> ScheduleError:
    schedule = Schedule(**{"cron_expr": "0 3 * * *", **fields})
    with pytest.raises(ScheduleError) as caught:
        schedule.check()
    return caught.value


def every(minutes: int, start: datetime, end: datetime) -> list[datetime]:
    step = timedelta(minutes=minutes)
    return [start + i * step for i in range((end - start) // step + 1)]


# --- the transitions the tests rely on ------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "before", "after"),
    [
        (NEW_YORK, utc(2027, 3, 14, 6, 59), utc(2027, 3, 14, 7)),
        (NEW_YORK, utc(2027, 11, 7, 5, 59), utc(2027, 11, 7, 6)),
        (BERLIN, utc(2027, 3, 28, 0, 59), utc(2027, 3, 28, 1)),
        (BERLIN, utc(2027, 10, 31, 0, 59), utc(2027, 10, 31, 1)),
        (LORD_HOWE, utc(2027, 10, 2, 15, 29), utc(2027, 10, 2, 15, 30)),
        (LORD_HOWE, utc(2027, 4, 3, 14, 59), utc(2027, 4, 3, 15)),
    ],
)
def test_zoneinfo_has_the_2027_transitions_these_tests_assume(
    zone: str, before: datetime, after: datetime
) -> None:
    tz = ZoneInfo(zone)
    assert before.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset()


# --- validation: every refusal names its field ---------------------------------------------


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        (
            "0 3 * *",
            "must have 5 fields (minute hour day month weekday), or 6 with seconds last: got 4",
        ),
        ("0 3 * * * * 2027", "got 7"),
        ("", "got 0"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "is not supported"),
        ("61 3 * * *", "is not a valid cron expression"),
        ("*/0 * * * *", "is not a valid cron expression"),
        ("0 3 * * funday", "is not a valid cron expression"),
        ("H 3 * * *", "H (hashed) and R (random)"),
        ("R 3 * * *", "H (hashed) and R (random)"),
    ],
)
def test_a_bad_cron_expression_is_refused_naming_cron_expr(expr: str, says: str) -> None:
    error = refused(cron_expr=expr)

    assert error.field == "cron_expr"
    assert says in str(error)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "America", "localtime"]
)
def test_an_unknown_timezone_is_refused_naming_timezone(zone: str) -> None:
    error = refused(timezone=zone)

    assert error.field == "timezone"
    assert repr(zone) in str(error)


@pytest.mark.parametrize("jitter", [-1, 3601, True])
def test_jitter_outside_0_to_3600_is_refused_naming_jitter_seconds(jitter: int) -> None:
    assert refused(jitter_seconds=jitter).field == "jitter_seconds"


def test_jitter_bounds_0_and_3600_are_accepted() -> None:
    Schedule("0 3 * * *", jitter_seconds=0).check()
    Schedule("0 3 * * *", jitter_seconds=3600).check()


def test_an_end_before_the_start_is_refused_naming_end_at() -> None:
    error = refused(start_at=utc(2027, 1, 2), end_at=utc(2027, 1, 1))

    assert error.field == "end_at"
    assert "before start_at" in str(error)


@pytest.mark.parametrize("field", ["start_at", "end_at"])
def test_a_naive_bound_is_refused_naming_it(field: str) -> None:
    assert refused(**{field: datetime(2027, 1, 1)}).field == field


def test_a_bad_schedule_refuses_to_compute_fire_times() -> None:
    with pytest.raises(ScheduleError):
        Schedule("0 3 * * *", timezone="Mars/Olympus").next_fire(utc(2027, 1, 1))


def test_a_naive_instant_or_negative_limit_is_a_value_error() -> None:
    schedule = Schedule("0 3 * * *")

    with pytest.raises(ValueError, match="after must be a datetime with a timezone"):
        schedule.fires_after(datetime(2027, 1, 1), 1)
    with pytest.raises(ValueError, match="limit"):
        schedule.fires_after(utc(2027, 1, 1), -1)


@pytest.mark.parametrize(
    "expr",
    [
        "0 3 * * *",
        "*/15 * * * *",
        "* * * * * */10",
        "0 0 L * *",
        "0 9 * * mon-fri",
        "@hourly",
        "@DAILY",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
    ],
)
def test_valid_expressions_pass_the_check(expr: str) -> None:
    Schedule(expr, timezone=NEW_YORK).check()


# --- UTC ------------------------------------------------------------------------------------


def test_a_daily_job_fires_at_its_hour_each_day_strictly_after() -> None:
    schedule = Schedule("0 3 * * *")

    assert schedule.fires_after(utc(2027, 1, 1, 3), 3) == [
        utc(2027, 1, 2, 3),
        utc(2027, 1, 3, 3),
        utc(2027, 1, 4, 3),
    ]
    assert schedule.next_fire(utc(2027, 1, 1, 2, 59, 59, 999999)) == utc(2027, 1, 1, 3)


def test_fire_times_are_aware_utc_on_whole_seconds() -> None:
    fires = Schedule("*/15 * * * *").fires_after(utc(2027, 1, 1, 0, 7, 30, 123456), 4)

    assert fires == every(15, utc(2027, 1, 1, 0, 15), utc(2027, 1, 1, 1))
    assert all(t.tzinfo is UTC and t.microsecond == 0 for t in fires)


def test_an_aware_non_utc_after_is_read_as_its_instant() -> None:
    after = datetime(2027, 1, 1, 4, tzinfo=timezone(timedelta(hours=2)))  # 02:00Z

    assert Schedule("0 3 * * *").next_fire(after) == utc(2027, 1, 1, 3)


def test_hourly_and_weekly_shortcuts() -> None:
    assert Schedule("@hourly").fires_after(utc(2027, 1, 1, 0, 30), 2) == [
        utc(2027, 1, 1, 1),
        utc(2027, 1, 1, 2),
    ]
    # 2027-01-01 is a Friday: @weekly is Sunday midnight.
    assert Schedule("@weekly").fires_after(utc(2027, 1, 1), 2) == [
        utc(2027, 1, 3),
        utc(2027, 1, 10),
    ]


def test_six_fields_put_seconds_last() -> None:
    assert Schedule("* * * * * */10").fires_after(utc(2027, 1, 1, 0, 0, 5), 3) == [
        utc(2027, 1, 1, 0, 0, 10),
        utc(2027, 1, 1, 0, 0, 20),
        utc(2027, 1, 1, 0, 0, 30),
    ]
    assert Schedule("30 2 * * * 15").next_fire(utc(2027, 1, 1)) == utc(2027, 1, 1, 2, 30, 15)


def test_an_expression_that_never_fires_returns_nothing_fast() -> None:
    started = time.perf_counter()

    assert Schedule("0 0 30 2 *").fires_after(utc(2027, 1, 1), 5) == []
    assert Schedule("0 0 31 4,6,9,11 *", timezone=NEW_YORK).next_fire(utc(2027, 1, 1)) is None
    assert Schedule("0 0 30 2 *").fires_between(utc(2027, 1, 1), utc(2028, 1, 1), 5) == []
    assert time.perf_counter() - started < 1.0


# --- America/New_York, spring forward 2027-03-14 (02:00 EST -> 03:00 EDT at 07:00Z) -------


def test_ny_spring_a_daily_time_in_the_gap_fires_once_at_the_transition() -> None:
    schedule = Schedule("30 2 * * *", timezone=NEW_YORK)

    assert schedule.fires_after(utc(2027, 3, 13, 12), 3) == [
        utc(2027, 3, 14, 7),  # 03:00 EDT, the first instant after the gap
        utc(2027, 3, 15, 6, 30),  # 02:30 EDT
        utc(2027, 3, 16, 6, 30),
    ]


def test_ny_spring_a_time_at_the_gap_start_fires_once_at_the_transition() -> None:
    schedule = Schedule("0 2 * * *", timezone=NEW_YORK)

    fires = schedule.fires_between(utc(2027, 3, 14), utc(2027, 3, 14, 23, 59), 10)

    assert fires == [utc(2027, 3, 14, 7)]


def test_ny_spring_times_in_the_gap_and_at_its_end_are_one_fire() -> None:
    # 02:00, 02:20, 02:40 do not exist and 03:00 is the transition instant itself.
    schedule = Schedule("0,20,40 2,3 * * *", timezone=NEW_YORK)

    assert schedule.fires_between(utc(2027, 3, 14), utc(2027, 3, 14, 12), 10) == [
        utc(2027, 3, 14, 7),
        utc(2027, 3, 14, 7, 20),
        utc(2027, 3, 14, 7, 40),
    ]


def test_ny_spring_every_15_minutes_follows_elapsed_time_across_the_gap() -> None:
    schedule = Schedule("*/15 * * * *", timezone=NEW_YORK)

    fires = schedule.fires_between(utc(2027, 3, 14, 6), utc(2027, 3, 14, 8), 100)

    assert fires == every(15, utc(2027, 3, 14, 6), utc(2027, 3, 14, 8))
    assert [schedule.local(t).strftime("%H:%M") for t in fires[3:6]] == [
        "01:45",
        "03:00",
        "03:15",
    ]


def test_ny_spring_hourly_at_half_past_skips_the_missing_0230() -> None:
    schedule = Schedule("30 * * * *", timezone=NEW_YORK)

    fires = schedule.fires_after(utc(2027, 3, 14, 6), 2)

    assert fires == [utc(2027, 3, 14, 6, 30), utc(2027, 3, 14, 7, 30)]  # 01:30 EST, 03:30 EDT


# --- America/New_York, fall back 2027-11-07 (02:00 EDT -> 01:00 EST at 06:00Z) -------------


def test_ny_fall_a_repeated_daily_time_fires_once_at_its_first_occurrence() -> None:
    schedule = Schedule("30 1 * * *", timezone=NEW_YORK)

    assert schedule.fires_after(utc(2027, 11, 6, 12), 2) == [
        utc(2027, 11, 7, 5, 30),  # 01:30 EDT; not 01:30 EST at 06:30Z
        utc(2027, 11, 8, 6, 30),
    ]


def test_ny_fall_every_15_minutes_fires_straight_through_the_repeated_hour() -> None:
    schedule = Schedule("*/15 * * * *", timezone=NEW_YORK)

    fires = schedule.fires_between(utc(2027, 11, 7, 5), utc(2027, 11, 7, 7), 100)

    assert fires == every(15, utc(2027, 11, 7, 5), utc(2027, 11, 7, 7))
    repeated = [t for t in fires if schedule.local(t).strftime("%H") == "01"]
    assert len(repeated) == 8


@pytest.mark.parametrize(
    ("after", "first"),
    [
        (utc(2027, 11, 7, 5, 40), utc(2027, 11, 7, 5, 45)),  # in the first 01:xx (EDT)
        (utc(2027, 11, 7, 5, 45), utc(2027, 11, 7, 6)),  # 01:00 EST comes next
        (utc(2027, 11, 7, 6, 10), utc(2027, 11, 7, 6, 15)),  # in the second 01:xx (EST)
    ],
)
def test_ny_fall_asking_from_inside_the_repeated_hour(after: datetime, first: datetime) -> None:
    schedule = Schedule("*/15 * * * *", timezone=NEW_YORK)

    assert schedule.fires_after(after, 3) == every(15, first, first + timedelta(minutes=30))


def test_ny_fall_hour_steps_follow_the_wall_clock() -> None:
    schedule = Schedule("0 */2 * * *", timezone=NEW_YORK)

    assert schedule.fires_after(utc(2027, 11, 7, 3), 3) == [
        utc(2027, 11, 7, 4),  # 00:00 EDT
        utc(2027, 11, 7, 7),  # 02:00 EST, three hours later
        utc(2027, 11, 7, 9),  # 04:00 EST
    ]


# --- Europe/Berlin ---------------------------------------------------------------------------


def test_berlin_spring_a_time_in_the_gap_fires_at_0300_cest() -> None:
    schedule = Schedule("30 2 * * *", timezone=BERLIN)

    assert schedule.fires_after(utc(2027, 3, 27, 12), 2) == [
        utc(2027, 3, 28, 1),  # 03:00 CEST
        utc(2027, 3, 29, 0, 30),  # 02:30 CEST
    ]


def test_berlin_spring_every_15_minutes_skips_the_gap() -> None:
    schedule = Schedule("*/15 * * * *", timezone=BERLIN)

    fires = schedule.fires_between(utc(2027, 3, 28, 0, 30), utc(2027, 3, 28, 1, 30), 100)

    assert fires == every(15, utc(2027, 3, 28, 0, 30), utc(2027, 3, 28, 1, 30))
    assert [schedule.local(t).strftime("%H:%M") for t in fires] == [
        "01:30",
        "01:45",
        "03:00",
        "03:15",
        "03:30",
    ]


def test_berlin_fall_a_repeated_time_fires_once_and_elapsed_jobs_twice() -> None:
    daily = Schedule("30 2 * * *", timezone=BERLIN)
    quarterly = Schedule("*/15 * * * *", timezone=BERLIN)

    assert daily.fires_between(utc(2027, 10, 30, 12), utc(2027, 10, 31, 12), 10) == [
        utc(2027, 10, 31, 0, 30)  # 02:30 CEST, the first occurrence
    ]
    assert quarterly.fires_between(utc(2027, 10, 31, 0), utc(2027, 10, 31, 2), 100) == every(
        15, utc(2027, 10, 31, 0), utc(2027, 10, 31, 2)
    )


# --- Australia/Lord_Howe: 30-minute shifts -------------------------------------------------


def test_lord_howe_a_time_in_the_half_hour_gap_fires_at_its_end() -> None:
    schedule = Schedule("15 2 * * *", timezone=LORD_HOWE)

    fires = schedule.fires_after(utc(2027, 10, 2), 2)

    assert fires == [utc(2027, 10, 2, 15, 30), utc(2027, 10, 3, 15, 15)]  # 02:30 +11, 02:15 +11
    assert schedule.local(fires[0]).utcoffset() == timedelta(hours=11)


def test_lord_howe_every_15_minutes_across_both_shifts_is_ascending_and_unique() -> None:
    schedule = Schedule("*/15 * * * *", timezone=LORD_HOWE)

    spring = schedule.fires_between(utc(2027, 10, 2, 15), utc(2027, 10, 2, 16), 100)
    autumn = schedule.fires_between(utc(2027, 4, 3, 14, 30), utc(2027, 4, 3, 15, 30), 100)

    assert spring == every(15, utc(2027, 10, 2, 15), utc(2027, 10, 2, 16))
    assert autumn == every(15, utc(2027, 4, 3, 14, 30), utc(2027, 4, 3, 15, 30))
    assert [schedule.local(t).strftime("%H:%M") for t in autumn] == [
        "01:30",
        "01:45",
        "01:30",
        "01:45",
        "02:00",
    ]


# --- bounds ----------------------------------------------------------------------------------


def test_start_at_and_end_at_are_inclusive_bounds() -> None:
    schedule = Schedule("0 3 * * *", start_at=utc(2027, 1, 2, 3), end_at=utc(2027, 1, 4, 3))

    assert schedule.fires_after(utc(2027, 1, 1), 10) == [
        utc(2027, 1, 2, 3),
        utc(2027, 1, 3, 3),
        utc(2027, 1, 4, 3),
    ]
    assert schedule.next_fire(utc(2027, 1, 4, 3)) is None


def test_fires_between_is_inclusive_at_both_ends_and_honours_the_limit() -> None:
    schedule = Schedule("0 * * * *")

    assert schedule.fires_between(utc(2027, 1, 1, 1), utc(2027, 1, 1, 3), 10) == [
        utc(2027, 1, 1, 1),
        utc(2027, 1, 1, 2),
        utc(2027, 1, 1, 3),
    ]
    assert schedule.fires_between(utc(2027, 1, 1, 1), utc(2027, 1, 1, 3), 2) == [
        utc(2027, 1, 1, 1),
        utc(2027, 1, 1, 2),
    ]
    assert schedule.fires_between(utc(2027, 1, 1, 1), utc(2027, 1, 1, 1), 5) == [utc(2027, 1, 1, 1)]
    assert schedule.fires_between(utc(2027, 1, 1, 3), utc(2027, 1, 1, 1), 5) == []
    assert schedule.fires_after(utc(2027, 1, 1), 0) == []


def test_fires_between_stays_within_start_at_and_end_at() -> None:
    schedule = Schedule("0 * * * *", start_at=utc(2027, 1, 1, 2), end_at=utc(2027, 1, 1, 4))

    assert schedule.fires_between(utc(2027, 1, 1), utc(2027, 1, 2), 10) == [
        utc(2027, 1, 1, 2),
        utc(2027, 1, 1, 3),
        utc(2027, 1, 1, 4),
    ]


# --- jitter and local time -----------------------------------------------------------------


def test_jitter_is_deterministic_within_bounds_and_differs_by_job() -> None:
    schedule = Schedule("0 3 * * *", jitter_seconds=600)

    first, second = schedule.jitter("job-1"), schedule.jitter("job-2")

    assert first == Schedule("0 3 * * *", jitter_seconds=600).jitter("job-1")
    assert first != second
    assert all(0.0 <= schedule.jitter(f"job-{i}") <= 600 for i in range(200))


def test_jitter_is_zero_without_jitter_seconds() -> None:
    assert Schedule("0 3 * * *").jitter("job-1") == 0.0


def test_local_gives_the_schedules_offset() -> None:
    schedule = Schedule("0 3 * * *", timezone=NEW_YORK)

    summer = schedule.local(utc(2027, 7, 1, 12))
    winter = schedule.local(utc(2027, 1, 1, 12))

    assert (summer.hour, summer.utcoffset()) == (8, timedelta(hours=-4))
    assert (winter.hour, winter.utcoffset()) == (7, timedelta(hours=-5))
