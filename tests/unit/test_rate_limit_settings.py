"""Settings for rate limits, login locking and JWT key rotation: NORN_RATE_LIMITS parsed
into a limit per plan, NORN_LOGIN_LOCK_AFTER / NORN_LOGIN_LOCK_SECONDS within bounds,
NORN_JWT_PREVIOUS_SECRETS long enough. Every bad value stops start-up with a message
naming the variable. No I/O: the environment is a dict."""

from __future__ import annotations

import pytest

from infrastructure.rate_limit import RateLimit
from infrastructure.settings import Settings, SettingsError

SECRET_32 = "s" * 32
ALL_PLANS = "free=100/20,pro=1000/100,enterprise=10000/500,platform=10000/500"


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ)
    return str(refused.value)


# --- NORN_RATE_LIMITS -------------------------------------------------------------------


def test_the_default_rate_limits_are_the_documented_ones() -> None:
    assert Settings.from_env({}).plan_rate_limits() == {
        "free": RateLimit(per_hour=100, burst=20),
        "pro": RateLimit(per_hour=1000, burst=100),
        "enterprise": RateLimit(per_hour=10000, burst=500),
        "platform": RateLimit(per_hour=10000, burst=500),
    }


def test_rate_limits_are_parsed_per_plan_with_spaces_allowed() -> None:
    settings = Settings.from_env(
        {"NORN_RATE_LIMITS": " free = 60/6 , pro=600/60, enterprise=6000/600,platform=1/1 "}
    )

    assert settings.plan_rate_limits() == {
        "free": RateLimit(60, 6),
        "pro": RateLimit(600, 60),
        "enterprise": RateLimit(6000, 600),
        "platform": RateLimit(1, 1),
    }


def test_a_burst_equal_to_the_hourly_rate_is_accepted() -> None:
    limits = Settings.from_env({"NORN_RATE_LIMITS": ALL_PLANS.replace("100/20", "20/20")})

    assert limits.plan_rate_limits()["free"] == RateLimit(20, 20)


def test_the_per_second_refill_is_the_hourly_rate_spread_over_an_hour() -> None:
    assert RateLimit(per_hour=3600, burst=10).per_second == 1.0
    assert RateLimit(per_hour=100, burst=20).per_second == pytest.approx(100 / 3600)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "free=100/20,pro=1000/100,enterprise=10000/500",
            "NORN_RATE_LIMITS has no limit for platform",
        ),
        ("free=100/20", "NORN_RATE_LIMITS has no limit for enterprise, platform, pro"),
        (ALL_PLANS.replace("100/20", "100/101"), "NORN_RATE_LIMITS free: need 1 <= burst"),
        (ALL_PLANS.replace("100/20", "100/0"), "NORN_RATE_LIMITS free: need 1 <= burst"),
        (ALL_PLANS.replace("100/20", "0/0"), "NORN_RATE_LIMITS free: need 1 <= burst"),
        (ALL_PLANS.replace("100/20", "-5/1"), "NORN_RATE_LIMITS free: need 1 <= burst"),
        (ALL_PLANS.replace("100/20", "100"), "NORN_RATE_LIMITS must read like"),
        (ALL_PLANS.replace("100/20", "100/"), "NORN_RATE_LIMITS must read like"),
        (ALL_PLANS.replace("100/20", "lots/20"), "NORN_RATE_LIMITS must read like"),
        (ALL_PLANS.replace("100/20", "100/20/5"), "NORN_RATE_LIMITS must read like"),
        (ALL_PLANS.replace("100/20", "1e3/20"), "NORN_RATE_LIMITS must read like"),
        (ALL_PLANS.replace("free=", "free:"), "NORN_RATE_LIMITS must read like"),
        ("junk", "NORN_RATE_LIMITS must read like"),
        (
            ALL_PLANS.replace("100/20", "200000000/20"),
            "NORN_RATE_LIMITS free: need 1 <= burst <= per hour <= 100000000",
        ),
        (ALL_PLANS + ",gold=5/5", "NORN_RATE_LIMITS names an unknown plan 'gold'"),
        (ALL_PLANS.replace("enterprise", "entreprise"), "unknown plan 'entreprise'"),
        (ALL_PLANS + ",free=5/5", "NORN_RATE_LIMITS sets free twice"),
    ],
)
def test_each_bad_rate_limit_is_refused_naming_the_variable(value: str, message: str) -> None:
    assert message in refusal({"NORN_RATE_LIMITS": value})


def test_the_refusal_quotes_the_bad_item() -> None:
    assert "not 'pro=many/10'" in refusal(
        {"NORN_RATE_LIMITS": ALL_PLANS.replace("1000/100", "many/10")}
    )


def test_rate_limits_given_as_an_override_are_validated_too() -> None:
    # Tests and embedders build settings in code; a typo must fail there as well.
    with pytest.raises(SettingsError, match="NORN_RATE_LIMITS"):
        Settings.from_env({}, rate_limits="free=1/2")


# --- NORN_LOGIN_LOCK_AFTER / NORN_LOGIN_LOCK_SECONDS ------------------------------------


def test_login_lock_defaults() -> None:
    settings = Settings.from_env({})

    assert (settings.login_lock_after, settings.login_lock_seconds) == (10, 900)


@pytest.mark.parametrize("value", ["3", "1000"])
def test_login_lock_after_bounds_are_accepted(value: str) -> None:
    assert Settings.from_env({"NORN_LOGIN_LOCK_AFTER": value}).login_lock_after == int(value)


@pytest.mark.parametrize("value", ["1", "86400"])
def test_login_lock_seconds_bounds_are_accepted(value: str) -> None:
    settings = Settings.from_env({"NORN_LOGIN_LOCK_SECONDS": value})

    assert settings.login_lock_seconds == int(value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"NORN_LOGIN_LOCK_AFTER": "2"}, "NORN_LOGIN_LOCK_AFTER must be between 3 and 1000"),
        ({"NORN_LOGIN_LOCK_AFTER": "0"}, "NORN_LOGIN_LOCK_AFTER must be between 3 and 1000"),
        ({"NORN_LOGIN_LOCK_AFTER": "1001"}, "NORN_LOGIN_LOCK_AFTER must be between 3 and 1000"),
        ({"NORN_LOGIN_LOCK_AFTER": "ten"}, "NORN_LOGIN_LOCK_AFTER must be a number, not 'ten'"),
        ({"NORN_LOGIN_LOCK_SECONDS": "0"}, "NORN_LOGIN_LOCK_SECONDS must be between 1 and 86400"),
        (
            {"NORN_LOGIN_LOCK_SECONDS": "86401"},
            "NORN_LOGIN_LOCK_SECONDS must be between 1 and 86400",
        ),
        (
            {"NORN_LOGIN_LOCK_SECONDS": "-1"},
            "NORN_LOGIN_LOCK_SECONDS must be between 1 and 86400",
        ),
        (
            {"NORN_LOGIN_LOCK_SECONDS": "15m"},
            "NORN_LOGIN_LOCK_SECONDS must be a number, not '15m'",
        ),
    ],
)
def test_bad_login_lock_values_are_refused_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    assert message in refusal(environ)


# --- NORN_JWT_PREVIOUS_SECRETS ----------------------------------------------------------


def test_previous_jwt_secrets_are_split_on_commas_ignoring_blanks() -> None:
    other = "o" * 40
    settings = Settings.from_env(
        {"NORN_JWT_SECRET": SECRET_32, "NORN_JWT_PREVIOUS_SECRETS": f" {SECRET_32}, ,{other} "}
    )

    assert settings.previous_jwt_secrets == (SECRET_32, other)
    assert other not in repr(settings)


def test_no_previous_jwt_secrets_by_default() -> None:
    assert Settings.from_env({}).previous_jwt_secrets == ()


@pytest.mark.parametrize("value", ["short", f"{SECRET_32},{'x' * 31}"])
def test_a_previous_jwt_secret_under_32_bytes_is_refused(value: str) -> None:
    message = refusal({"NORN_JWT_SECRET": SECRET_32, "NORN_JWT_PREVIOUS_SECRETS": value})

    assert "every key in NORN_JWT_PREVIOUS_SECRETS must be at least 32 bytes" in message
    # The refusal must not echo the secret it refuses.
    assert "x" * 31 not in message


def test_several_problems_are_reported_together() -> None:
    message = refusal(
        {
            "NORN_RATE_LIMITS": "free=1/2",
            "NORN_LOGIN_LOCK_AFTER": "1",
            "NORN_JWT_PREVIOUS_SECRETS": "short",
        }
    )

    for variable in ("NORN_RATE_LIMITS", "NORN_LOGIN_LOCK_AFTER", "NORN_JWT_PREVIOUS_SECRETS"):
        assert variable in message
