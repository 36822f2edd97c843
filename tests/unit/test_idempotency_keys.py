"""The API's side of idempotent commands, without a server: the key id a command derives
its ids from (api/idempotency.py) and the test-only crash point (api/crash_points.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.crash_points import ENV, CrashPoint
from api.idempotency import key_id

GENERATION = datetime(2026, 12, 3, 7, 0, 0, 123456, tzinfo=UTC)


def test_every_attempt_of_one_request_has_one_key_id() -> None:
    first = key_id("u1@t1", "k", b"request", GENERATION)
    elsewhere = GENERATION.astimezone(timezone(timedelta(hours=-5)))  # another session
    assert key_id("u1@t1", "k", b"request", elsewhere) == first


@pytest.mark.parametrize(
    ("who", "key", "fingerprint", "generation"),
    [
        ("u2@t1", "k", b"request", GENERATION),  # another principal
        ("u1@t2", "k", b"request", GENERATION),  # another tenant
        ("u1@t1", "k2", b"request", GENERATION),  # another key
        ("u1@t1", "k", b"another", GENERATION),  # another request
        ("u1@t1", "k", b"request", GENERATION + timedelta(microseconds=1)),  # reused later
        ("u1@t", "1k", b"request", GENERATION),  # the parts do not run into each other
    ],
)
def test_anything_else_has_another_key_id(
    who: str, key: str, fingerprint: bytes, generation: datetime
) -> None:
    assert key_id(who, key, fingerprint, generation) != key_id("u1@t1", "k", b"request", GENERATION)


def test_the_crash_point_is_off_unless_set() -> None:
    assert CrashPoint.from_env({}) is None
    assert CrashPoint.from_env({ENV: ""}) is None
    point = CrashPoint.from_env({ENV: "idempotency-after-record:key:with:colons"})
    assert point == CrashPoint("idempotency-after-record", "key:with:colons")
    point.reached("idempotency-after-command", "key:with:colons")  # another point: lives
    point.reached("idempotency-after-record", "another-key")  # another key: lives


@pytest.mark.parametrize("raw", ["nowhere:k", "idempotency-after-record", "after-record:"])
def test_a_crash_point_that_names_no_point_and_key_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=ENV):
        CrashPoint.from_env({ENV: raw})
