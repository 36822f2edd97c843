"""The API keys' read model holds every expiry it is given in a form a read can return:
one UTC cannot hold (stored before the API refused such times) as UTC's last instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from projections.api_keys import _time


def test_an_expiry_utc_cannot_hold_is_kept_as_its_last_instant() -> None:
    west = timezone(timedelta(hours=-14))
    assert _time("9999-12-31T23:59:59-14:00") == datetime.max.replace(tzinfo=UTC)
    assert _time(datetime(9999, 12, 31, 23, 59, 59, tzinfo=west)) == datetime.max.replace(
        tzinfo=UTC
    )
    assert _time("0001-01-01T00:00:00+14:00") == datetime.min.replace(tzinfo=UTC)


def test_other_times_pass_as_given() -> None:
    assert _time(None) is None
    assert _time("2027-01-01T00:00:00+02:00") == datetime(
        2027, 1, 1, tzinfo=timezone(timedelta(hours=2))
    )
    assert _time("9999-12-31T10:00:00-14:00").year == 9999  # UTC holds it: kept
