"""Settings.from_env: NORN_* variables parsed into one settings object, validated at
start with a message naming each bad variable. The environment is passed in as a dict,
so nothing reads the real process environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrastructure.settings import Settings, SettingsError

SECRET_32 = "s" * 32


def test_defaults_with_an_empty_environment() -> None:
    settings = Settings.from_env({})

    assert settings.database_url is None
    assert settings.nats_url is None
    assert settings.embedded is True
    assert settings.data_dir == Path(".norn")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.admin_username is None
    assert settings.admin_password is None
    assert settings.jwt_secret is None
    assert (settings.jwt_issuer, settings.jwt_audience) == ("norn", "norn-api")
    assert (settings.access_token_ttl, settings.refresh_token_ttl) == (900, 604800)
    assert (settings.nats_stream, settings.subject_prefix) == ("NORN_EVENTS", "norn")
    assert settings.db_pool_size == 10
    assert settings.max_body_bytes == 1_048_576
    assert settings.min_position_timeout == 5.0
    assert settings.log_level == "INFO"
    # Above a load balancer's idle timeout (AWS ALB 60 s): the client side closes first.
    assert settings.http_keepalive == 65


def test_values_are_parsed_into_their_types() -> None:
    settings = Settings.from_env(
        {
            "NORN_DATABASE_URL": "postgresql://norn@db:5432/norn",
            "NORN_NATS_URL": "nats://bus:4222",
            "NORN_DATA_DIR": "/var/lib/norn",
            "NORN_HOST": "10.0.0.5",
            "NORN_PORT": "9000",
            "NORN_ADMIN_USERNAME": "root",
            "NORN_ADMIN_PASSWORD": "a-long-password",
            "NORN_JWT_SECRET": SECRET_32,
            "NORN_ACCESS_TOKEN_TTL": "60",
            "NORN_SUBJECT_PREFIX": "norn_prod-2",
            "NORN_DB_POOL_SIZE": "20",
            "NORN_MIN_POSITION_TIMEOUT": "2.5",
            "NORN_LOG_LEVEL": "DEBUG",
        }
    )

    assert settings.database_url == "postgresql://norn@db:5432/norn"
    assert settings.nats_url == "nats://bus:4222"
    assert settings.embedded is False
    assert settings.data_dir == Path("/var/lib/norn")
    assert isinstance(settings.data_dir, Path)
    assert settings.host == "10.0.0.5"
    assert settings.port == 9000
    assert (settings.admin_username, settings.admin_password) == ("root", "a-long-password")
    assert settings.jwt_secret == SECRET_32
    assert settings.access_token_ttl == 60
    assert settings.subject_prefix == "norn_prod-2"
    assert settings.db_pool_size == 20
    assert settings.min_position_timeout == 2.5
    assert isinstance(settings.min_position_timeout, float)
    assert settings.log_level == "DEBUG"


def test_embedded_when_either_server_url_is_missing() -> None:
    assert Settings.from_env({"NORN_DATABASE_URL": "postgresql://x/y"}).embedded is True
    assert Settings.from_env({"NORN_NATS_URL": "nats://x:4222"}).embedded is True


def test_empty_values_and_other_variables_are_ignored() -> None:
    settings = Settings.from_env({"NORN_PORT": "", "NORN_DATABASE_URL": "", "PORT": "1"})

    assert settings.port == 8080
    assert settings.database_url is None


def test_overrides_win_over_the_environment_and_are_validated() -> None:
    assert Settings.from_env({"NORN_PORT": "9000"}, port=9100).port == 9100

    with pytest.raises(SettingsError, match="NORN_PORT"):
        Settings.from_env({"NORN_PORT": "9000"}, port=0)


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings.from_env(
        {
            "NORN_ADMIN_USERNAME": "root",
            "NORN_ADMIN_PASSWORD": "hunter2-hunter2",
            "NORN_JWT_SECRET": SECRET_32,
        }
    )

    assert "hunter2-hunter2" not in repr(settings)
    assert SECRET_32 not in repr(settings)
    assert "root" in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"NORN_PORT": "0"}, "NORN_PORT must be between 1 and 65535"),
        ({"NORN_PORT": "65536"}, "NORN_PORT must be between 1 and 65535"),
        ({"NORN_PORT": "-1"}, "NORN_PORT must be between 1 and 65535"),
        ({"NORN_PORT": "http"}, "NORN_PORT must be a number, not 'http'"),
        ({"NORN_PORT": "80.5"}, "NORN_PORT must be a number, not '80.5'"),
        ({"NORN_DB_POOL_SIZE": "many"}, "NORN_DB_POOL_SIZE must be a number, not 'many'"),
        (
            {"NORN_MIN_POSITION_TIMEOUT": "soon"},
            "NORN_MIN_POSITION_TIMEOUT must be a number, not 'soon'",
        ),
        ({"NORN_JWT_SECRET": "s" * 31}, "NORN_JWT_SECRET must be at least 32 bytes"),
        (
            {"NORN_ADMIN_USERNAME": "root"},
            "set both NORN_ADMIN_USERNAME and NORN_ADMIN_PASSWORD, or neither",
        ),
        (
            {"NORN_ADMIN_PASSWORD": "a-long-password"},
            "set both NORN_ADMIN_USERNAME and NORN_ADMIN_PASSWORD, or neither",
        ),
        ({"NORN_ACCESS_TOKEN_TTL": "29"}, "NORN_ACCESS_TOKEN_TTL must be at least 30 seconds"),
        ({"NORN_SUBJECT_PREFIX": "norn.prod"}, "NORN_SUBJECT_PREFIX must be letters"),
        ({"NORN_SUBJECT_PREFIX": "norn>"}, "NORN_SUBJECT_PREFIX must be letters"),
        ({"NORN_DB_POOL_SIZE": "1"}, "NORN_DB_POOL_SIZE must be at least 2"),
        ({"NORN_SCHEDULER_LEAD": "-1"}, "NORN_SCHEDULER_LEAD must be between 0 and 30"),
        ({"NORN_SCHEDULER_LEAD": "31"}, "NORN_SCHEDULER_LEAD must be between 0 and 30"),
        ({"NORN_HTTP_KEEPALIVE": "0"}, "NORN_HTTP_KEEPALIVE must be between 1 and 3600"),
        ({"NORN_HTTP_KEEPALIVE": "3601"}, "NORN_HTTP_KEEPALIVE must be between 1 and 3600"),
        ({"NORN_HTTP_WORKERS": "-1"}, "NORN_HTTP_WORKERS must be between 0 and 64"),
        ({"NORN_HTTP_WORKERS": "65"}, "NORN_HTTP_WORKERS must be between 0 and 64"),
        ({"NORN_LOG_LEVEL": "LOUD"}, "NORN_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
        ({"NORN_IDEMPOTENCY_TTL": "59"}, "NORN_IDEMPOTENCY_TTL must be between 60 seconds"),
        ({"NORN_IDEMPOTENCY_TTL": "2592001"}, "NORN_IDEMPOTENCY_TTL must be between 60 seconds"),
        ({"NORN_PASSWORD_HASH_COST": "m=8,t=1,p=1"}, "NORN_PASSWORD_HASH_COST must be at least"),
        ({"NORN_PASSWORD_HASH_COST": "m=19455,t=2,p=1"}, "NORN_PASSWORD_HASH_COST must be at"),
        ({"NORN_PASSWORD_HASH_COST": "m=19456,t=1,p=1"}, "NORN_PASSWORD_HASH_COST must be at"),
        ({"NORN_PASSWORD_HASH_COST": "m=65536,t=3,p=17"}, "NORN_PASSWORD_HASH_COST must be at"),
        ({"NORN_PASSWORD_HASH_COST": "m=65536,t=3"}, "NORN_PASSWORD_HASH_COST must set m, t"),
        ({"NORN_PASSWORD_HASH_COST": "65536,3,4"}, "NORN_PASSWORD_HASH_COST must read like"),
        ({"NORN_PASSWORD_HASH_COST": "m=1,m=2,t=3,p=4"}, "NORN_PASSWORD_HASH_COST must read"),
        # The admin's password follows the policy, checked before a first start begins.
        (
            {"NORN_ADMIN_USERNAME": "admin", "NORN_ADMIN_PASSWORD": "admin-password-123"},
            "NORN_ADMIN_PASSWORD: password must not contain the username",
        ),
        (
            {"NORN_ADMIN_USERNAME": "root", "NORN_ADMIN_PASSWORD": "short"},
            "NORN_ADMIN_PASSWORD: password must be at least 10 characters",
        ),
    ],
)
def test_each_bad_value_is_refused_with_a_message_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ)

    assert message in str(refused.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(
            {"NORN_PORT": "70000", "NORN_JWT_SECRET": "short", "NORN_DB_POOL_SIZE": "1"}
        )

    text = str(refused.value)
    assert "NORN_PORT" in text
    assert "NORN_JWT_SECRET" in text
    assert "NORN_DB_POOL_SIZE" in text


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="NORN_PORT"):
        Settings.from_env({"NORN_PORT": "nope"})


def test_the_jwt_secret_length_is_counted_in_bytes() -> None:
    sixteen_two_byte_characters = "é" * 16  # 16 characters, 32 bytes in UTF-8

    assert Settings.from_env({"NORN_JWT_SECRET": sixteen_two_byte_characters}).jwt_secret
    assert Settings.from_env({"NORN_JWT_SECRET": SECRET_32}).jwt_secret == SECRET_32
    with pytest.raises(SettingsError, match="NORN_JWT_SECRET"):
        Settings.from_env({"NORN_JWT_SECRET": "é" * 15 + "x"})  # 31 bytes


@pytest.mark.parametrize("port", ["1", "65535"])
def test_the_port_bounds_are_accepted(port: str) -> None:
    assert Settings.from_env({"NORN_PORT": port}).port == int(port)


def test_both_admin_variables_together_are_accepted() -> None:
    settings = Settings.from_env(
        {"NORN_ADMIN_USERNAME": "root", "NORN_ADMIN_PASSWORD": "a-long-password"}
    )

    assert settings.admin_username == "root"


def test_the_log_level_is_checked_case_insensitively() -> None:
    assert Settings.from_env({"NORN_LOG_LEVEL": "warning"}).log_level.upper() == "WARNING"


def test_the_password_hash_cost_defaults_to_the_libraries_and_accepts_owasps_minimum() -> None:
    assert Settings.from_env({}).password_hash_params() == (65536, 3, 4)
    minimum = Settings.from_env({"NORN_PASSWORD_HASH_COST": "m=19456,t=2,p=1"})
    assert minimum.password_hash_params() == (19456, 2, 1)
    reordered = Settings.from_env({"NORN_PASSWORD_HASH_COST": " p=2, m=131072 ,t=4"})
    assert reordered.password_hash_params() == (131072, 4, 2)


@pytest.mark.parametrize(("cores", "serve", "api"), [(1, 0, 0), (2, 2, 1), (16, 2, 1)])
def test_http_workers_answer_beside_norn_serve_where_it_may_use_two_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, serve: int, api: int
) -> None:
    # `norn api` answers itself: one worker fewer beside it, as many processes answering.
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    unset = Settings.from_env({})
    assert unset.http_workers is None
    assert unset.http_workers_beside(answers_itself=False) == serve
    assert unset.http_workers_beside(answers_itself=True) == api
    given = Settings.from_env({"NORN_HTTP_WORKERS": "3"})
    assert given.http_workers_beside(answers_itself=False) == 3
    assert given.http_workers_beside(answers_itself=True) == 3
