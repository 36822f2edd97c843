"""The Tenant aggregate's lifecycle: given a tenant (built from its own commands), when a
command runs, then these events are recorded (or this error is raised, recording
nothing). Pure domain, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext, NornEvent
from domain.tenant import (
    LABEL_VALUE_MAX,
    MAX_LABELS,
    MAX_NAMESPACES,
    PLAN_QUOTAS,
    QUOTA_MAX,
    QUOTA_NAMES,
    EnvironmentPolicy,
    Quotas,
    Tenant,
    TenantCreated,
    TenantDeleted,
    TenantNamespaceAdded,
    TenantNamespaceRemoved,
    TenantPlanChanged,
    TenantQuotasSet,
    TenantReactivated,
    TenantSuspended,
    TenantUpdated,
)

CTX = CommandContext("user:root", "corr-1", "cause-1")
_SAVED: dict[UUID, list[NornEvent]] = {}


def given_tenant(*history: Callable[[Tenant], Any], plan: str = "free", **fields: Any) -> Tenant:
    """A tenant whose past is its creation and then `history`, each step applied and
    already saved: what remains to collect is only what the command under test records."""
    created: dict[str, Any] = {
        "tenant_id": uuid4(),
        "name": "Acme",
        "description": "the acme team",
        "plan": plan,
        "labels": {"region": "eu"},
        "owner": "ops@acme.example",
        "ctx": CTX,
    }
    created.update(fields)
    tenant = Tenant.create(**created)
    for step in history:
        step(tenant)
    _SAVED[tenant.id] = list(tenant.collect_events())
    return tenant


def saved_events(tenant: Tenant) -> list[NornEvent]:
    """The events of the tenant's given past (what the store holds before the command)."""
    return _SAVED[tenant.id]


def replayed(tenant: Tenant, events: list[NornEvent]) -> Tenant:
    """The tenant rebuilt from nothing but its events (what the store would load)."""
    rebuilt = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Tenant)
    assert rebuilt.id == tenant.id
    return rebuilt


def update(tenant: Tenant, **changes: Any) -> bool:
    fields: dict[str, Any] = {
        "name": tenant.name,
        "description": tenant.description,
        "labels": dict(tenant.labels),
        "owner": tenant.owner,
    }
    fields.update(changes)
    return tenant.update(**fields, ctx=CTX)


def suspended(tenant: Tenant) -> None:
    tenant.suspend("unpaid invoice", CTX)


def deleted(tenant: Tenant) -> None:
    tenant.delete(CTX)


def with_namespace(name: str) -> Callable[[Tenant], None]:
    return lambda tenant: tenant.add_namespace(name, CTX)


# --- create -------------------------------------------------------------------------------


def test_create_records_owner_labels_plan_and_the_context() -> None:
    tenant_id = uuid4()

    tenant = Tenant.create(
        tenant_id=tenant_id,
        name="Acme",
        description="",
        plan="pro",
        labels={"team.example.com/cost-center": "42", "tier": ""},
        owner="ops@acme.example",
        ctx=CTX,
    )

    [event] = tenant.collect_events()
    assert isinstance(event, TenantCreated)
    assert event.owner == "ops@acme.example"
    assert event.labels == {"team.example.com/cost-center": "42", "tier": ""}
    assert event.plan == "pro"
    assert (event.actor, event.correlation_id, event.causation_id) == (
        "user:root",
        "corr-1",
        "cause-1",
    )
    assert (tenant.status, tenant.status_reason, tenant.namespaces) == ("active", "", ())
    assert tenant.quota_overrides == Quotas()
    assert replayed(tenant, [event]).owner == "ops@acme.example"


@pytest.mark.parametrize(
    "key",
    ["", "-a", "a-", ".a", "a.", "has space", "ümlaut", "a" * 64, "a:b", "a\nb", "key\n"],
)
def test_create_refuses_a_label_key_outside_the_pattern(key: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        given_tenant(labels={key: "v"})

    assert refused.value.field == f"labels.{key}"
    assert "label key" in str(refused.value)


@pytest.mark.parametrize("key", ["a", "A9", "a" * 63, "k8s.io/app_name-x", "x/y.z"])
def test_create_accepts_label_keys_within_the_pattern(key: str) -> None:
    assert given_tenant(labels={key: "v"}).labels == {key: "v"}


def test_create_refuses_a_label_value_longer_than_the_maximum() -> None:
    assert given_tenant(labels={"k": "v" * LABEL_VALUE_MAX}).labels["k"] == "v" * LABEL_VALUE_MAX

    with pytest.raises(InvalidCommand) as refused:
        given_tenant(labels={"k": "v" * (LABEL_VALUE_MAX + 1)})

    assert refused.value.field == "labels.k"
    assert f"at most {LABEL_VALUE_MAX}" in str(refused.value)


def test_create_refuses_more_labels_than_the_maximum() -> None:
    most = {f"k{i}": "v" for i in range(MAX_LABELS)}
    assert len(given_tenant(labels=most).labels) == MAX_LABELS

    with pytest.raises(InvalidCommand) as refused:
        given_tenant(labels={**most, "one-more": "v"})

    assert refused.value.field == "labels"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"owner": "ops\x00@acme"}, "owner"),
        ({"labels": {"region": "e\x00u"}}, "labels.region"),
        ({"labels": {"reg\x00ion": "eu"}}, "labels"),
    ],
)
def test_create_refuses_nul_in_owner_and_labels(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        given_tenant(**fields)

    assert refused.value.field == where
    assert "NUL" in str(refused.value)


def test_create_refuses_an_owner_longer_than_200_characters() -> None:
    with pytest.raises(InvalidCommand) as refused:
        given_tenant(owner="o" * 201)

    assert refused.value.field == "owner"


# --- update, rename, plan -----------------------------------------------------------------


def test_update_with_nothing_changed_returns_false_and_records_nothing() -> None:
    tenant = given_tenant()

    changed = update(tenant, name="  Acme ")  # the same name once stripped

    assert changed is False
    assert tenant.collect_events() == []
    assert tenant.version == 1


def test_update_records_every_descriptive_field_after_the_change() -> None:
    tenant = given_tenant()

    changed = update(tenant, description="new", labels={"tier": "gold"})

    assert changed is True
    [event] = tenant.collect_events()
    assert isinstance(event, TenantUpdated)
    assert (event.name, event.description, event.labels, event.owner) == (
        "Acme",
        "new",
        {"tier": "gold"},
        "ops@acme.example",
    )
    assert tenant.labels == {"tier": "gold"}  # replaced, not merged


def test_rename_records_the_stripped_new_name() -> None:
    tenant = given_tenant()

    update(tenant, name="  Acme Corp  ")

    [event] = tenant.collect_events()
    assert isinstance(event, TenantUpdated)
    assert event.name == tenant.name == "Acme Corp"


def test_update_applies_the_same_rules_as_create() -> None:
    tenant = given_tenant()

    for changes, where in [
        ({"name": " "}, "name"),
        ({"labels": {"-bad": "v"}}, "labels.-bad"),
        ({"owner": "\x00"}, "owner"),
    ]:
        with pytest.raises(InvalidCommand) as refused:
            update(tenant, **changes)
        assert refused.value.field == where

    assert tenant.collect_events() == []


def test_change_plan_records_the_previous_plan_and_changes_the_quotas_in_force() -> None:
    tenant = given_tenant(plan="free")

    assert tenant.change_plan("pro", CTX) is True

    [event] = tenant.collect_events()
    assert isinstance(event, TenantPlanChanged)
    assert (event.plan, event.previous_plan) == ("pro", "free")
    assert tenant.quotas == PLAN_QUOTAS["pro"]


def test_change_plan_to_the_same_plan_records_nothing_and_an_unknown_one_is_refused() -> None:
    tenant = given_tenant(plan="pro")

    assert tenant.change_plan("pro", CTX) is False
    with pytest.raises(InvalidCommand) as refused:
        tenant.change_plan("platinum", CTX)

    assert refused.value.field == "plan"
    assert tenant.collect_events() == []


# --- quotas -------------------------------------------------------------------------------


def test_every_plan_sets_every_quota() -> None:
    for plan, quotas in PLAN_QUOTAS.items():
        missing = [name for name in QUOTA_NAMES if getattr(quotas, name) is None]
        assert not missing, f"{plan} has no default for {missing}"
    # Higher plans never get less.
    for name in QUOTA_NAMES:
        free, pro, enterprise = (
            getattr(PLAN_QUOTAS[p], name) for p in ("free", "pro", "enterprise")
        )
        assert free <= pro <= enterprise, name


def test_set_quotas_merges_the_overrides_over_the_plan_defaults() -> None:
    tenant = given_tenant(plan="free")

    assert tenant.set_quotas(Quotas(max_pipelines=3, max_jobs=0), CTX) is True

    [event] = tenant.collect_events()
    assert isinstance(event, TenantQuotasSet)
    assert event.quotas == Quotas(max_pipelines=3, max_jobs=0)
    assert tenant.quota("max_pipelines") == 3
    assert tenant.quota("max_jobs") == 0  # zero is a limit, not "unset"
    assert tenant.quota("max_deployments") == PLAN_QUOTAS["free"].max_deployments
    assert replayed(tenant, [*saved_events(tenant), event]).quota("max_pipelines") == 3


def test_set_quotas_replaces_the_whole_override_set_and_none_means_the_plan_default() -> None:
    tenant = given_tenant(lambda t: t.set_quotas(Quotas(max_pipelines=3, max_jobs=1), CTX))

    tenant.set_quotas(Quotas(max_jobs=1), CTX)

    assert tenant.quota("max_pipelines") == PLAN_QUOTAS["free"].max_pipelines
    assert tenant.quota("max_jobs") == 1


def test_overrides_survive_a_plan_change_and_the_rest_follows_the_new_plan() -> None:
    tenant = given_tenant(lambda t: t.set_quotas(Quotas(max_pipelines=3), CTX), plan="free")

    tenant.change_plan("enterprise", CTX)

    assert tenant.quota("max_pipelines") == 3
    assert tenant.quota("max_jobs") == PLAN_QUOTAS["enterprise"].max_jobs


def test_set_quotas_unchanged_records_nothing() -> None:
    tenant = given_tenant(lambda t: t.set_quotas(Quotas(max_pipelines=3), CTX))

    assert tenant.set_quotas(Quotas(max_pipelines=3), CTX) is False
    assert tenant.collect_events() == []


@pytest.mark.parametrize("value", [-1, QUOTA_MAX + 1])
@pytest.mark.parametrize("name", QUOTA_NAMES)
def test_set_quotas_refuses_a_value_out_of_bounds(name: str, value: int) -> None:
    tenant = given_tenant()

    with pytest.raises(InvalidCommand) as refused:
        tenant.set_quotas(Quotas(**{name: value}), CTX)

    assert refused.value.field == name
    assert tenant.collect_events() == []


@pytest.mark.parametrize("value", [0, QUOTA_MAX])
def test_set_quotas_accepts_the_bounds(value: int) -> None:
    tenant = given_tenant()

    tenant.set_quotas(Quotas(max_runs_per_day=value), CTX)

    assert tenant.quota("max_runs_per_day") == value


def test_quota_of_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        given_tenant().quota("max_unicorns")


# --- suspend, reactivate, writable --------------------------------------------------------


def test_suspend_records_the_reason_and_makes_the_tenant_read_only() -> None:
    tenant = given_tenant()
    assert tenant.writable

    assert tenant.suspend("unpaid invoice", CTX) is True

    [event] = tenant.collect_events()
    assert isinstance(event, TenantSuspended)
    assert event.reason == "unpaid invoice"
    assert (tenant.status, tenant.status_reason, tenant.writable) == (
        "suspended",
        "unpaid invoice",
        False,
    )


def test_suspending_a_suspended_tenant_records_nothing() -> None:
    tenant = given_tenant(suspended)

    assert tenant.suspend("another reason", CTX) is False
    assert tenant.collect_events() == []
    assert tenant.status_reason == "unpaid invoice"


@pytest.mark.parametrize("reason", ["r" * 1001, "bad\x00reason"])
def test_suspend_refuses_a_bad_reason(reason: str) -> None:
    tenant = given_tenant()

    with pytest.raises(InvalidCommand) as refused:
        tenant.suspend(reason, CTX)

    assert refused.value.field == "reason"
    assert tenant.status == "active"


def test_reactivate_makes_a_suspended_tenant_writable_again() -> None:
    tenant = given_tenant(suspended)

    assert tenant.reactivate(CTX) is True

    [event] = tenant.collect_events()
    assert isinstance(event, TenantReactivated)
    assert (tenant.status, tenant.status_reason, tenant.writable) == ("active", "", True)


def test_reactivating_an_active_tenant_records_nothing() -> None:
    tenant = given_tenant()

    assert tenant.reactivate(CTX) is False
    assert tenant.collect_events() == []


# --- delete -------------------------------------------------------------------------------


def test_delete_records_tenant_deleted_and_the_tenant_is_not_writable() -> None:
    tenant = given_tenant(suspended)

    tenant.delete(CTX)

    [event] = tenant.collect_events()
    assert isinstance(event, TenantDeleted)
    assert (tenant.status, tenant.writable) == ("deleted", False)


COMMANDS: dict[str, Callable[[Tenant], Any]] = {
    "update": lambda t: update(t, description="changed"),
    "update unchanged": lambda t: update(t),
    "change_plan": lambda t: t.change_plan("pro", CTX),
    "set_quotas": lambda t: t.set_quotas(Quotas(max_pipelines=1), CTX),
    "suspend": suspended,
    "reactivate": lambda t: t.reactivate(CTX),
    "delete": deleted,
    "add_namespace": with_namespace("new"),
    "remove_namespace": lambda t: t.remove_namespace("prod", CTX),
    "set_environment_policy": lambda t: t.set_environment_policy(
        "production", EnvironmentPolicy(protected=True), CTX
    ),
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_deleted_tenant_refuses_every_command(command: Callable[[Tenant], Any]) -> None:
    tenant = given_tenant(with_namespace("prod"), deleted)

    with pytest.raises(AggregateDeleted):
        command(tenant)

    assert tenant.collect_events() == []
    assert tenant.status == "deleted"


def test_every_public_command_is_checked_after_delete() -> None:
    """A new command added to Tenant must be added to COMMANDS above."""
    commands = {
        name
        for name, member in vars(Tenant).items()
        if callable(member) and not isinstance(member, type) and not name.startswith("_")
    } - {"create"}
    queries = {"quota", "environment_policy"}
    assert commands <= {name.split(" ")[0] for name in COMMANDS} | queries


# --- namespaces ---------------------------------------------------------------------------


def test_add_namespace_records_it_in_order() -> None:
    tenant = given_tenant(with_namespace("dev"))

    tenant.add_namespace("prod", CTX)

    [event] = tenant.collect_events()
    assert isinstance(event, TenantNamespaceAdded)
    assert event.namespace == "prod"
    assert tenant.namespaces == ("dev", "prod")


@pytest.mark.parametrize(
    "namespace",
    ["", "Prod", "-prod", "prod-", "pr_od", "pr.od", "a" * 64, "prod\n", "pröd", "a b"],
)
def test_add_namespace_refuses_a_name_outside_the_pattern(namespace: str) -> None:
    tenant = given_tenant()

    with pytest.raises(InvalidCommand) as refused:
        tenant.add_namespace(namespace, CTX)

    assert refused.value.field == "namespace"
    assert tenant.collect_events() == []


@pytest.mark.parametrize("namespace", ["a", "0", "team-a", "a" * 63, "1-2-3"])
def test_add_namespace_accepts_dns_labels(namespace: str) -> None:
    tenant = given_tenant()

    tenant.add_namespace(namespace, CTX)

    assert tenant.namespaces == (namespace,)


def test_add_namespace_refuses_a_duplicate() -> None:
    tenant = given_tenant(with_namespace("prod"))

    with pytest.raises(InvalidCommand) as refused:
        tenant.add_namespace("prod", CTX)

    assert refused.value.field == "namespace"
    assert "already exists" in str(refused.value)
    assert tenant.collect_events() == []


def test_add_namespace_refuses_more_than_the_maximum() -> None:
    tenant = given_tenant(*(with_namespace(f"ns-{i}") for i in range(MAX_NAMESPACES)))

    with pytest.raises(InvalidCommand) as refused:
        tenant.add_namespace("one-more", CTX)

    assert refused.value.field == "namespace"
    assert str(MAX_NAMESPACES) in str(refused.value)
    assert len(tenant.namespaces) == MAX_NAMESPACES


def test_remove_namespace_records_it_and_frees_the_name() -> None:
    tenant = given_tenant(with_namespace("dev"), with_namespace("prod"))

    tenant.remove_namespace("dev", CTX)

    [event] = tenant.collect_events()
    assert isinstance(event, TenantNamespaceRemoved)
    assert event.namespace == "dev"
    assert tenant.namespaces == ("prod",)
    tenant.add_namespace("dev", CTX)  # the name can be added again
    assert tenant.namespaces == ("prod", "dev")


def test_remove_an_unknown_namespace_is_refused() -> None:
    tenant = given_tenant(with_namespace("prod"))

    with pytest.raises(InvalidCommand) as refused:
        tenant.remove_namespace("dev", CTX)

    assert refused.value.field == "namespace"
    assert tenant.collect_events() == []


def test_a_suspended_tenant_still_manages_its_namespaces_in_the_domain() -> None:
    """Suspension is enforced by authorisation (application/authorization.py), not by
    the aggregate: a platform admin can still repair a suspended tenant."""
    tenant = given_tenant(suspended)

    tenant.add_namespace("prod", CTX)

    assert tenant.namespaces == ("prod",)


def test_the_whole_history_replays_to_the_same_state() -> None:
    tenant = given_tenant(
        lambda t: update(t, name="Acme Corp", labels={"tier": "gold"}),
        lambda t: t.change_plan("enterprise", CTX),
        lambda t: t.set_quotas(Quotas(max_pipelines=7), CTX),
        with_namespace("prod"),
        lambda t: t.suspend("audit", CTX),
    )

    rebuilt = replayed(tenant, saved_events(tenant))

    assert (rebuilt.name, rebuilt.labels, rebuilt.plan) == (
        "Acme Corp",
        {"tier": "gold"},
        "enterprise",
    )
    assert (rebuilt.namespaces, rebuilt.status, rebuilt.status_reason) == (
        ("prod",),
        "suspended",
        "audit",
    )
    assert rebuilt.quota("max_pipelines") == 7
    assert rebuilt.version == tenant.version
