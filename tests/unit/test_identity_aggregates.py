"""Tenant, User and NameClaim aggregates: given these events, when this command, then
these events (or this error). Pure domain, no I/O."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from domain.errors import InvalidCommand, NameTaken
from domain.events import CommandContext, NornEvent
from domain.name_claim import (
    NameClaim,
    NameClaimReleased,
    NameClaimRetaken,
    NameClaimTaken,
    claim_id,
)
from domain.tenant import Tenant, TenantCreated
from domain.user import PLATFORM_ADMIN, User, UserRegistered, user_id_for

CTX = CommandContext("user:u1", "corr-1")
TENANT = "tenant-1"


def given(events: list[NornEvent]) -> Any:
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


@pytest.mark.parametrize(
    ("event_class", "type_name"),
    [
        (TenantCreated, "norn.tenant.created.v1"),
        (UserRegistered, "norn.user.registered.v1"),
        (NameClaimTaken, "norn.name_claim.taken.v1"),
        (NameClaimRetaken, "norn.name_claim.retaken.v1"),
        (NameClaimReleased, "norn.name_claim.released.v1"),
    ],
)
def test_event_type_names(event_class: type[NornEvent], type_name: str) -> None:
    assert event_class.type_name() == type_name


# --- Tenant -----------------------------------------------------------------------------


def create_tenant(name: str = "Acme", plan: str = "pro", **kwargs: Any) -> Tenant:
    fields: dict[str, Any] = {
        "tenant_id": uuid4(),
        "description": "the acme team",
        "labels": {"region": "eu"},
        "ctx": CTX,
    }
    fields.update(kwargs)
    return Tenant.create(name=name, plan=plan, **fields)


def test_create_tenant_records_tenant_created() -> None:
    tenant_id = uuid4()

    tenant = create_tenant("  Acme  ", "enterprise", tenant_id=tenant_id)

    [event] = tenant.collect_events()
    assert isinstance(event, TenantCreated)
    assert event.originator_id == tenant_id
    assert event.name == "Acme"  # stripped
    assert event.plan == "enterprise"
    assert event.description == "the acme team"
    assert event.labels == {"region": "eu"}
    # A tenant's events belong to the tenant itself.
    assert event.tenant_id == str(tenant_id)
    assert (event.actor, event.correlation_id, event.causation_id) == ("user:u1", "corr-1", None)


def test_tenant_rebuilt_from_its_events_has_its_state() -> None:
    tenant_id = uuid4()
    events = create_tenant("Acme", "free", tenant_id=tenant_id).collect_events()

    tenant = given(events)

    assert isinstance(tenant, Tenant)
    assert (tenant.name, tenant.plan, tenant.status) == ("Acme", "free", "active")
    assert tenant.labels == {"region": "eu"}
    assert tenant.tenant_id == str(tenant_id)
    assert tenant.version == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_tenant_rejects_a_name_outside_1_to_100_characters(name: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        create_tenant(name)

    assert refused.value.field == "name"
    assert "1 to 100 characters" in str(refused.value)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"name": "Ac\x00me"}, "name"),
        ({"description": "\x00"}, "description"),
        ({"labels": {"region": "e\x00u"}}, "labels.region"),
        ({"labels": {"reg\x00ion": "eu"}}, "labels"),
    ],
)
def test_create_tenant_refuses_nul_characters(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidCommand) as invalid:
        create_tenant(**fields)

    assert invalid.value.field == where
    assert "NUL" in str(invalid.value)


def test_create_tenant_accepts_a_name_of_100_characters() -> None:
    assert create_tenant("x" * 100).name == "x" * 100


@pytest.mark.parametrize("plan", ["gold", "", "Pro"])
def test_create_tenant_rejects_an_unknown_plan(plan: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        create_tenant(plan=plan)

    assert refused.value.field == "plan"
    assert str(refused.value) == "plan must be one of free, pro, enterprise"


@pytest.mark.parametrize("plan", ["free", "pro", "enterprise"])
def test_create_tenant_accepts_every_plan(plan: str) -> None:
    assert create_tenant(plan=plan).plan == plan


# --- User -------------------------------------------------------------------------------


def register(
    username: str = "alice",
    tenant_id: str | None = TENANT,
    roles: tuple[str, ...] = ("editor",),
    ctx: CommandContext = CTX,
) -> User:
    return User.register(
        username=username,
        password_hash="$argon2id$fake-hash",
        tenant_id=tenant_id,
        roles=roles,
        ctx=ctx,
    )


def test_register_records_user_registered_with_a_name_derived_id() -> None:
    ctx = CommandContext("user:admin", "corr-7", "cause-7")

    user = register("Alice.Smith", TENANT, ("editor", "viewer"), ctx)

    [event] = user.collect_events()
    assert isinstance(event, UserRegistered)
    assert event.originator_id == user_id_for("Alice.Smith")
    assert event.username == "Alice.Smith"
    assert event.password_hash == "$argon2id$fake-hash"
    assert event.roles == ("editor", "viewer")
    assert event.tenant_id == TENANT
    assert (event.actor, event.correlation_id, event.causation_id) == (
        "user:admin",
        "corr-7",
        "cause-7",
    )


def test_user_rebuilt_from_its_events_has_its_state() -> None:
    user = given(register("bob", TENANT, ("operator",)).collect_events())

    assert isinstance(user, User)
    assert (user.username, user.tenant_id, user.roles) == ("bob", TENANT, ("operator",))
    assert user.active is True
    assert user.is_platform_admin is False


def test_the_password_hash_is_a_private_field_of_user_registered() -> None:
    assert "password_hash" in UserRegistered.private_fields
    assert "username" not in UserRegistered.private_fields


def test_register_removes_duplicate_roles_keeping_their_order() -> None:
    user = register(roles=("viewer", "editor", "viewer"))

    assert user.roles == ("viewer", "editor")


def test_a_platform_admin_has_no_tenant() -> None:
    user = register("root", None, (PLATFORM_ADMIN,))

    [event] = user.collect_events()
    assert event.tenant_id is None
    assert event.roles == ("platform_admin",)
    assert user.is_platform_admin is True


@pytest.mark.parametrize(
    "username",
    ["", "ab", "-alice", ".alice", "_alice", "al ice", "alice!", "alice/x", "a" * 65, "ålice"],
)
def test_register_rejects_a_bad_username(username: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        register(username)

    assert refused.value.field == "username"


@pytest.mark.parametrize("username", ["abc", "a" * 64, "alice@example.com", "a-b_c.d", "9lives"])
def test_register_accepts_a_good_username(username: str) -> None:
    assert register(username).username == username


def test_register_rejects_a_username_with_a_trailing_newline() -> None:
    with pytest.raises(InvalidCommand) as refused:
        register("alice\n")

    assert refused.value.field == "username"


def test_register_requires_a_role() -> None:
    with pytest.raises(InvalidCommand) as refused:
        register(roles=())

    assert refused.value.field == "roles"


@pytest.mark.parametrize("roles", [("admin",), (PLATFORM_ADMIN, "admin"), ("viewer",)])
def test_a_user_without_a_tenant_must_be_only_a_platform_admin(roles: tuple[str, ...]) -> None:
    with pytest.raises(InvalidCommand) as refused:
        register("root", None, roles)

    assert refused.value.field == "tenant_id"


@pytest.mark.parametrize(
    ("roles", "unknown"),
    [((PLATFORM_ADMIN,), "platform_admin"), (("editor", "superuser"), "superuser")],
)
def test_a_tenant_user_may_have_tenant_roles_only(roles: tuple[str, ...], unknown: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        register("carol", TENANT, roles)

    assert refused.value.field == "roles"
    assert f"unknown role(s) {unknown}" in str(refused.value)


def test_a_tenant_user_may_have_every_tenant_role() -> None:
    user = register(roles=("admin", "editor", "operator", "viewer"))

    assert user.roles == ("admin", "editor", "operator", "viewer")


def test_user_id_for_is_deterministic_and_case_insensitive() -> None:
    assert user_id_for("alice") == user_id_for("alice")
    assert user_id_for("Alice") == user_id_for("ALICE") == user_id_for("  alice ")
    assert user_id_for("alice") != user_id_for("alice2")
    assert user_id_for("alice").version == 5


# --- NameClaim --------------------------------------------------------------------------

SCOPE = f"pipeline:{TENANT}"


def claim_events(name: str = "orders", holder: str = "p-1") -> list[NornEvent]:
    claim = NameClaim.claim_new(tenant_id=TENANT, scope=SCOPE, name=name, holder_id=holder, ctx=CTX)
    return claim.collect_events()


def test_claim_new_records_name_claim_taken_under_a_name_derived_id() -> None:
    [event] = claim_events("Orders", "p-1")

    assert isinstance(event, NameClaimTaken)
    assert event.originator_id == claim_id(SCOPE, "orders")
    assert (event.scope, event.name, event.holder_id) == (SCOPE, "Orders", "p-1")
    assert (event.tenant_id, event.actor, event.correlation_id) == (TENANT, "user:u1", "corr-1")
    assert given([event]).holder_id == "p-1"


def test_claim_by_the_current_holder_records_nothing() -> None:
    claim = given(claim_events(holder="p-1"))

    claim.claim("p-1", CTX)

    assert claim.collect_events() == []
    assert claim.holder_id == "p-1"


def test_claim_of_a_held_name_by_another_raises_name_taken() -> None:
    claim = given(claim_events("orders", holder="p-1"))

    with pytest.raises(NameTaken) as taken:
        claim.claim("p-2", CTX)

    assert (taken.value.kind, taken.value.name, taken.value.holder_id) == (
        "pipeline",
        "orders",
        "p-1",
    )
    assert str(taken.value) == "pipeline name 'orders' is already taken"
    assert claim.collect_events() == []
    assert claim.holder_id == "p-1"


def test_release_by_the_holder_records_name_claim_released() -> None:
    claim = given(claim_events(holder="p-1"))

    claim.release("p-1", CommandContext("user:u2", "corr-2"))

    [event] = claim.collect_events()
    assert isinstance(event, NameClaimReleased)
    assert (event.holder_id, event.originator_version) == ("p-1", 2)
    assert (event.tenant_id, event.actor, event.correlation_id) == (TENANT, "user:u2", "corr-2")
    assert claim.holder_id is None


def test_release_by_someone_else_records_nothing() -> None:
    claim = given(claim_events(holder="p-1"))

    claim.release("p-2", CTX)

    assert claim.collect_events() == []
    assert claim.holder_id == "p-1"


def test_a_released_name_can_be_reclaimed_by_another_holder() -> None:
    events = claim_events(holder="p-1")
    released = given(events)
    released.release("p-1", CTX)
    events += released.collect_events()
    claim = given(events)

    claim.claim("p-2", CTX)

    [event] = claim.collect_events()
    assert isinstance(event, NameClaimRetaken)
    assert (event.holder_id, event.originator_version, event.tenant_id) == ("p-2", 3, TENANT)
    assert claim.holder_id == "p-2"


def test_release_of_a_released_name_records_nothing() -> None:
    claim = given(claim_events(holder="p-1"))
    claim.release("p-1", CTX)
    claim.collect_events()

    claim.release("p-1", CTX)

    assert claim.collect_events() == []


def test_claim_id_ignores_case_and_surrounding_space_but_not_scope() -> None:
    assert claim_id(SCOPE, "Orders") == claim_id(SCOPE, "  orders ") == claim_id(SCOPE, "ORDERS")
    assert claim_id(SCOPE, "orders") != claim_id(SCOPE, "orders-2")
    assert claim_id(SCOPE, "orders") != claim_id("pipeline:tenant-2", "orders")
    assert claim_id("tenant", "orders") != claim_id(SCOPE, "orders")
