"""NORN_STREAM_LIMITS: open event streams (SSE and WebSocket together) per plan, parsed
like NORN_RATE_LIMITS: every plan and `platform` exactly once, each a whole number from
1 to 1,000,000; a bad value stops start-up naming the variable. No I/O."""

from __future__ import annotations

import pytest

from infrastructure.settings import Settings, SettingsError

ALL_PLANS = "free=5,pro=50,enterprise=500,platform=100"


def test_the_default_stream_limits_are_the_documented_ones() -> None:
    assert Settings.from_env({}).plan_stream_limits() == {
        "free": 5,
        "pro": 50,
        "enterprise": 500,
        "platform": 100,
    }


def test_stream_limits_are_parsed_per_plan_with_spaces_allowed() -> None:
    settings = Settings.from_env(
        {"NORN_STREAM_LIMITS": " free = 1 , pro=2, enterprise=3,platform=1000000 "}
    )

    assert settings.plan_stream_limits() == {
        "free": 1,
        "pro": 2,
        "enterprise": 3,
        "platform": 1_000_000,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("free=5,pro=50,enterprise=500", "NORN_STREAM_LIMITS has no limit for platform"),
        ("free=5", "NORN_STREAM_LIMITS has no limit for enterprise, platform, pro"),
        (ALL_PLANS.replace("free=5", "free=0"), "NORN_STREAM_LIMITS free: need 1 <= open"),
        (ALL_PLANS.replace("free=5", "free=-1"), "NORN_STREAM_LIMITS free: need 1 <= open"),
        (ALL_PLANS.replace("free=5", "free=1000001"), "NORN_STREAM_LIMITS free: need 1 <="),
        (ALL_PLANS.replace("free=5", "free=5/2"), "NORN_STREAM_LIMITS must read like"),
        (ALL_PLANS.replace("free=5", "free=many"), "NORN_STREAM_LIMITS must read like"),
        (ALL_PLANS.replace("free=5", "free:5"), "NORN_STREAM_LIMITS must read like"),
        (ALL_PLANS.replace("free=5", "free="), "NORN_STREAM_LIMITS must read like"),
        (ALL_PLANS + ",gold=9", "NORN_STREAM_LIMITS names an unknown plan 'gold'"),
        (ALL_PLANS + ",pro=9", "NORN_STREAM_LIMITS sets pro twice"),
        ("junk", "NORN_STREAM_LIMITS must read like"),
    ],
)
def test_a_bad_stream_limit_stops_start_up_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"NORN_STREAM_LIMITS": value})

    assert message in str(refused.value)
