"""The User aggregate after registration: given its events, when a command, then these
events (or this error). Pure domain, no I/O. Registration itself is covered in
test_identity_aggregates.py."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext, NornEvent
from domain.user import (
    PLATFORM_ADMIN,
    User,
    UserDeactivated,
    UserDeleted,
    UserPasswordChanged,
    UserReactivated,
    UserRolesChanged,
)

CTX = CommandContext("user:admin-1", "corr-1", "cause-1")
TENANT = "tenant-1"
OLD_HASH = "$argon2id$old-hash"
NEW_HASH = "$argon2id$new-hash"


def history(
    *commands: Any, tenant_id: str | None = TENANT, roles: tuple[str, ...] = ("editor",)
) -> list[NornEvent]:
    """The stored events of a user registered, then given `commands`."""
    user = User.register(
        username="alice", password_hash=OLD_HASH, tenant_id=tenant_id, roles=roles, ctx=CTX
    )
    for command in commands:
        command(user)
    return list(user.collect_events())


def given_user(
    *commands: Any, tenant_id: str | None = TENANT, roles: tuple[str, ...] = ("editor",)
) -> User:
    """A user rebuilt from its stored events (as the repository loads it)."""
    return rebuilt(history(*commands, tenant_id=tenant_id, roles=roles))


def rebuilt(events: list[NornEvent]) -> User:
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, User)
    return aggregate


def given_platform_admin() -> User:
    return given_user(tenant_id=None, roles=(PLATFORM_ADMIN,))


@pytest.mark.parametrize(
    ("event_class", "type_name"),
    [
        (UserRolesChanged, "norn.user.roles_changed.v1"),
        (UserDeactivated, "norn.user.deactivated.v1"),
        (UserReactivated, "norn.user.reactivated.v1"),
        (UserPasswordChanged, "norn.user.password_changed.v1"),
        (UserDeleted, "norn.user.deleted.v1"),
    ],
)
def test_event_type_names(event_class: type[NornEvent], type_name: str) -> None:
    # The users projection subscribes by these names: renaming a class must be deliberate.
    assert event_class.type_name() == type_name


# --- change_roles -----------------------------------------------------------------------


def test_change_roles_records_user_roles_changed_with_the_context() -> None:
    past = history()
    user = rebuilt(past)

    changed = user.change_roles(("admin", "viewer"), CTX)

    assert changed is True
    [event] = user.collect_events()
    assert isinstance(event, UserRolesChanged)
    assert event.roles == ("admin", "viewer")
    assert (event.tenant_id, event.actor, event.correlation_id, event.causation_id) == (
        TENANT,
        "user:admin-1",
        "corr-1",
        "cause-1",
    )
    assert rebuilt([*past, event]).roles == ("admin", "viewer")


@pytest.mark.parametrize(
    "roles", [("editor",), ("editor", "editor")], ids=["same", "same-with-duplicates"]
)
def test_change_roles_to_the_same_roles_records_nothing(roles: tuple[str, ...]) -> None:
    user = given_user(roles=("editor",))

    changed = user.change_roles(roles, CTX)

    assert changed is False
    assert user.collect_events() == []
    assert user.roles == ("editor",)


def test_change_roles_to_the_same_roles_in_another_order_records_nothing() -> None:
    # Roles are a set: reordering them is no change worth an event.
    user = given_user(roles=("editor", "operator"))

    changed = user.change_roles(("operator", "editor"), CTX)

    assert changed is False
    assert user.collect_events() == []


def test_change_roles_removes_duplicates_keeping_their_order() -> None:
    user = given_user()

    user.change_roles(("viewer", "admin", "viewer"), CTX)

    [event] = user.collect_events()
    assert event.roles == ("viewer", "admin")


def test_a_tenant_user_cannot_be_given_platform_admin() -> None:
    user = given_user()

    with pytest.raises(InvalidCommand) as refused:
        user.change_roles(("admin", PLATFORM_ADMIN), CTX)

    assert refused.value.field == "roles"
    assert user.collect_events() == []
    assert user.roles == ("editor",)


@pytest.mark.parametrize("roles", [(), ("owner",), ("editor", "superuser")])
def test_change_roles_refuses_no_role_or_an_unknown_role(roles: tuple[str, ...]) -> None:
    user = given_user()

    with pytest.raises(InvalidCommand):
        user.change_roles(roles, CTX)

    assert user.collect_events() == []


@pytest.mark.parametrize("roles", [("admin",), (PLATFORM_ADMIN, "admin"), ()])
def test_a_platform_user_must_stay_platform_admin_only(roles: tuple[str, ...]) -> None:
    user = given_platform_admin()

    with pytest.raises(InvalidCommand):
        user.change_roles(roles, CTX)

    assert user.collect_events() == []
    assert user.roles == (PLATFORM_ADMIN,)


def test_a_platform_user_keeping_platform_admin_records_nothing() -> None:
    user = given_platform_admin()

    assert user.change_roles((PLATFORM_ADMIN,), CTX) is False
    assert user.collect_events() == []


def test_a_role_change_leaves_the_credentials_version_alone() -> None:
    # Sessions re-read the roles on every request; they need not end.
    user = given_user()

    user.change_roles(("viewer",), CTX)

    assert user.credentials_version == 1


# --- set_active -------------------------------------------------------------------------


def test_deactivation_records_user_deactivated_and_bumps_the_credentials_version() -> None:
    user = given_user()

    changed = user.set_active(False, CTX)

    assert changed is True
    [event] = user.collect_events()
    assert isinstance(event, UserDeactivated)
    assert (event.tenant_id, event.actor) == (TENANT, "user:admin-1")
    assert (user.active, user.credentials_version) == (False, 2)
    assert user.can_authenticate is False


def test_deactivating_an_inactive_user_records_nothing() -> None:
    user = given_user(lambda u: u.set_active(False, CTX))

    assert user.set_active(False, CTX) is False
    assert user.collect_events() == []
    assert user.credentials_version == 2


def test_activating_an_active_user_records_nothing() -> None:
    user = given_user()

    assert user.set_active(True, CTX) is False
    assert user.collect_events() == []


def test_reactivation_records_user_reactivated_and_keeps_the_credentials_version() -> None:
    # Sessions voided by the deactivation stay void: the version does not go back.
    user = given_user(lambda u: u.set_active(False, CTX))

    changed = user.set_active(True, CTX)

    assert changed is True
    [event] = user.collect_events()
    assert isinstance(event, UserReactivated)
    assert (user.active, user.credentials_version) == (True, 2)
    assert user.can_authenticate is True


# --- change_password --------------------------------------------------------------------


def test_change_password_records_the_new_hash_and_bumps_the_credentials_version() -> None:
    user = given_user()

    user.change_password(NEW_HASH, CTX)

    [event] = user.collect_events()
    assert isinstance(event, UserPasswordChanged)
    assert event.password_hash == NEW_HASH
    assert (event.tenant_id, event.actor) == (TENANT, "user:admin-1")
    assert (user.password_hash, user.credentials_version) == (NEW_HASH, 2)


def test_each_password_change_bumps_the_credentials_version_again() -> None:
    user = given_user(lambda u: u.change_password(NEW_HASH, CTX))

    user.change_password("$argon2id$third", CTX)

    assert user.credentials_version == 3


def test_the_password_hash_is_a_private_field_of_user_password_changed() -> None:
    # Private fields never leave the event store (NATS, feeds, webhooks).
    assert "password_hash" in UserPasswordChanged.private_fields


# --- delete -----------------------------------------------------------------------------


def test_delete_records_user_deleted_and_ends_every_session() -> None:
    user = given_user()

    user.delete(CTX)

    [event] = user.collect_events()
    assert isinstance(event, UserDeleted)
    assert (event.tenant_id, event.actor) == (TENANT, "user:admin-1")
    assert (user.deleted, user.active, user.credentials_version) == (True, False, 2)
    assert user.can_authenticate is False


COMMANDS_AFTER_DELETE = {
    "change_roles": lambda u: u.change_roles(("viewer",), CTX),
    "change_roles_same": lambda u: u.change_roles(("editor",), CTX),
    "deactivate": lambda u: u.set_active(False, CTX),
    "reactivate": lambda u: u.set_active(True, CTX),
    "change_password": lambda u: u.change_password(NEW_HASH, CTX),
    "delete": lambda u: u.delete(CTX),
}


@pytest.mark.parametrize("command", COMMANDS_AFTER_DELETE.values(), ids=COMMANDS_AFTER_DELETE)
def test_a_deleted_user_refuses_every_command(command: Any) -> None:
    user = given_user(lambda u: u.delete(CTX))

    with pytest.raises(AggregateDeleted):
        command(user)

    assert user.collect_events() == []
    assert (user.deleted, user.credentials_version) == (True, 2)


# --- can_authenticate -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ((), True),
        ((lambda u: u.change_password(NEW_HASH, CTX),), True),
        ((lambda u: u.change_roles(("viewer",), CTX),), True),
        ((lambda u: u.set_active(False, CTX),), False),
        ((lambda u: u.set_active(False, CTX), lambda u: u.set_active(True, CTX)), True),
        ((lambda u: u.delete(CTX),), False),
        ((lambda u: u.set_active(False, CTX), lambda u: u.delete(CTX)), False),
    ],
    ids=[
        "registered",
        "new-password",
        "new-roles",
        "deactivated",
        "reactivated",
        "deleted",
        "deactivated-then-deleted",
    ],
)
def test_can_authenticate_only_while_active_and_not_deleted(
    commands: tuple[Any, ...], expected: bool
) -> None:
    assert given_user(*commands).can_authenticate is expected
