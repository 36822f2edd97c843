"""ApiKey aggregate and API key material: given these events, when this command, then
these events (or this error). Pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from application.authorization import check_key_roles
from application.errors import PermissionDenied
from application.principal import Principal
from domain.api_key import ApiKey, ApiKeyCreated, ApiKeyRevoked, api_key_id_for
from domain.errors import InvalidCommand
from domain.events import CommandContext
from infrastructure.api_key_secrets import ApiKeySecrets

CTX = CommandContext("user:u1", "corr-1")
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SECRETS = ApiKeySecrets()


def create(**overrides: Any) -> ApiKey:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-1",
        "name": "ci deploys",
        "prefix": "abcdef0123",
        "secret_hash": "sha256:00",
        "roles": ("editor",),
        "expires_at": None,
        "now": NOW,
        "ctx": CTX,
    }
    fields.update(overrides)
    return ApiKey.create(**fields)


def test_event_type_names() -> None:
    assert ApiKeyCreated.type_name() == "norn.api_key.created.v1"
    assert ApiKeyRevoked.type_name() == "norn.api_key.revoked.v1"


def test_create_records_the_key_with_its_hash_private() -> None:
    key = create(roles=("viewer", "operator", "viewer"), expires_at=NOW + timedelta(days=1))

    (event,) = key.collect_events()
    assert isinstance(event, ApiKeyCreated)
    assert event.originator_id == api_key_id_for("abcdef0123")
    assert event.tenant_id == "tenant-1"
    assert event.name == "ci deploys"
    assert event.roles == ("viewer", "operator")
    assert event.created_by == "user:u1"
    assert event.expires_at == NOW + timedelta(days=1)
    assert "secret_hash" in ApiKeyCreated.private_fields
    assert key.usable_at(NOW)
    assert not key.usable_at(NOW + timedelta(days=1))


def test_the_id_is_derived_from_the_prefix() -> None:
    assert api_key_id_for("abcdef0123") == api_key_id_for("abcdef0123")
    assert api_key_id_for("abcdef0123") != api_key_id_for("abcdef0124")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"roles": ()}, "roles"),
        ({"roles": ("editor", "owner")}, "roles"),
        ({"roles": ("platform_admin",)}, "roles"),
        ({"expires_at": NOW}, "expires_at"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "expires_at"),
        ({"expires_at": datetime(2031, 1, 1)}, "expires_at"),  # no time zone
    ],
)
def test_create_refuses_bad_arguments(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCommand) as error:
        create(**overrides)
    assert error.value.field == field


def test_a_name_of_100_characters_is_accepted() -> None:
    assert create(name="n" * 100).name == "n" * 100


def test_revoke_records_one_event_and_the_key_stops_working() -> None:
    key = create()
    key.collect_events()

    assert key.revoke(CommandContext("user:u2", "corr-2")) is True

    (event,) = key.collect_events()
    assert isinstance(event, ApiKeyRevoked)
    assert event.actor == "user:u2"
    assert event.tenant_id == "tenant-1"
    assert key.revoked and key.revoked_at == event.timestamp
    assert not key.usable_at(NOW)


def test_revoking_twice_is_idempotent_and_records_nothing() -> None:
    key = create()
    key.revoke(CTX)
    key.collect_events()

    assert key.revoke(CTX) is False
    assert key.collect_events() == []
    assert key.revoked


def test_a_new_key_round_trips_through_parse_and_verifies() -> None:
    prefix, secret = SECRETS.new_key()
    text = SECRETS.format(prefix, secret)

    assert text.startswith(f"nrn_{prefix}_")
    assert len(prefix) == 10
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert SECRETS.parse(text) == (prefix, secret)
    stored = SECRETS.hash(prefix, secret)
    assert secret not in stored
    assert SECRETS.verify(stored, prefix, secret)
    assert not SECRETS.verify(stored, prefix, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    # The hash is bound to the prefix: the same secret under another prefix fails.
    assert not SECRETS.verify(stored, "zzzzzzzzzz", secret)
    assert SECRETS.new_key() != SECRETS.new_key()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "nrn_",
        "nrn_short_x",
        "xyz_abcdef0123_" + "a" * 43,
        "nrn_ABCDEF0123_" + "a" * 43,
        "nrn_abcdef0123_" + "a" * 42,
        "nrn_abcdef0123_" + "a" * 42 + "!",
    ],
)
def test_malformed_keys_do_not_parse(text: str) -> None:
    assert SECRETS.parse(text) is None


def test_a_key_may_not_carry_permissions_its_creator_lacks() -> None:
    admin = Principal("u1", "ada", "tenant-1", frozenset({"admin"}))
    operator = Principal("u2", "bob", "tenant-1", frozenset({"operator"}))

    check_key_roles(admin, ("admin", "editor", "operator", "viewer"))
    check_key_roles(operator, ("viewer", "operator"))
    with pytest.raises(PermissionDenied):
        check_key_roles(operator, ("editor",))
    with pytest.raises(PermissionDenied):
        check_key_roles(admin, ("platform_admin",))
