"""Tenant connections (README "Connections"): the Connection aggregate given-when-then,
and ConnectionService on the in-memory store with the production connection types:
credentials only as references to the tenant's own live secrets, names unique per
tenant, deletes refused while pipelines use one, another tenant's name not found."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from application.connections import ConnectionReferenced, ConnectionService
from application.errors import NotFound, VersionConflict
from application.ports import ConnectionReference
from application.principal import Principal
from application.secrets import SecretService
from domain.connection import (
    Connection,
    ConnectionConfig,
    ConnectionCreated,
    ConnectionDeleted,
    ConnectionRecreated,
    ConnectionUpdated,
    InvalidConnection,
    connection_id,
)
from domain.errors import AggregateDeleted, Conflict, InvalidCommand, NameTaken
from domain.events import CommandContext, Idempotency
from domain.tenant import Tenant
from infrastructure.connectors import check_connection
from infrastructure.secret_store import MasterKeys, new_master_key
from tests.support.deployments import CTX, World
from tests.support.memory import (
    MemoryConnectionReferences,
    MemorySecretReferences,
    MemorySecretValues,
)

PASSWORD = "Distinctive-pl41n-Password-k2"
PG: dict[str, Any] = {
    "host": "db.example.com",
    "database": "orders",
    "user": "loader",
    "password": {"secret": "db-password"},
}


def make(**fields: Any) -> Connection:
    return Connection.create(
        tenant_id="t1",
        name=fields.pop("name", "warehouse"),
        type_=fields.pop("type_", "postgres"),
        config=fields.pop("config", PG),
        ctx=CTX,
        **fields,
    )


# --- the aggregate ------------------------------------------------------------------------


def test_a_created_connection_has_an_id_from_tenant_and_name_and_its_config() -> None:
    connection = make(description="the warehouse")
    (event,) = connection.collect_events()
    assert isinstance(event, ConnectionCreated)
    assert (event.name, event.type, event.config) == ("warehouse", "postgres", PG)
    assert connection.id == connection_id("t1", "warehouse") != connection_id("t2", "warehouse")
    assert connection_id("t1", "Warehouse") != connection.id  # names are case-sensitive
    assert connection.live_config == ConnectionConfig("postgres", PG)


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "x" * 101, "a/b"])
def test_names_follow_the_step_name_rule(name: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        make(name=name)
    assert refused.value.field == "name"


def test_nul_text_and_a_long_description_are_refused_with_their_fields() -> None:
    with pytest.raises(InvalidConnection) as refused:
        make(config={**PG, "database": "a\x00b"}, description="x" * 1001)
    assert {e.field for e in refused.value.errors} == {"config.database", "description"}


def test_an_update_replaces_the_config_records_only_changes_and_keeps_the_type() -> None:
    connection = make()
    assert connection.update(CTX, config={**PG, "port": 5433}) is True
    assert connection.update(CTX, config={**PG, "port": 5433}) is False
    assert connection.update(CTX, config={**PG, "port": 5433}, description="d") is True
    assert connection.config["port"] == 5433 and connection.description == "d"
    with pytest.raises(InvalidCommand) as refused:
        connection.update(CTX, config={"base_url": "https://x.example"}, type_="http")
    assert refused.value.field == "type"
    kinds = [type(e) for e in connection.collect_events()]
    assert kinds == [ConnectionCreated, ConnectionUpdated, ConnectionUpdated]


def test_a_deleted_connection_takes_no_command_and_its_name_can_be_taken_again() -> None:
    connection = make()
    connection.delete(CTX, forced=False)
    assert connection.live_config is None
    with pytest.raises(AggregateDeleted):
        connection.update(CTX, config=PG)
    with pytest.raises(AggregateDeleted):
        connection.delete(CTX, forced=True)
    connection.recreate(CTX, type_="http", config={"base_url": "https://api.example.com"})
    assert connection.live_config == ConnectionConfig(
        "http", {"base_url": "https://api.example.com"}
    )
    with pytest.raises(Conflict):
        connection.recreate(CTX, type_="http", config={})
    kinds = [type(e) for e in connection.collect_events()]
    assert kinds[-2:] == [ConnectionDeleted, ConnectionRecreated]


def test_live_config_is_a_copy_the_caller_cannot_change_the_aggregate_through() -> None:
    connection = make(type_="http", config={"base_url": "https://a.example", "headers": {"A": "1"}})
    found = connection.live_config
    assert found is not None
    found.config["headers"]["A"] = "changed"
    assert connection.config["headers"] == {"A": "1"}


# --- the service ----------------------------------------------------------------------------


class Tenancy(World):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        values = MemorySecretValues(MasterKeys([new_master_key()]))
        self.secrets = SecretService(self.store, values, MemorySecretReferences())
        self.refs = MemoryConnectionReferences()
        self.connections = ConnectionService(self.store, check_connection, self.refs)
        self.secrets.create(self.admin, CTX, name="db-password", value=PASSWORD)

    def other_tenant(self) -> Principal:
        """A second tenant's admin."""
        tenant = Tenant.create(
            tenant_id=uuid4(), name="other", description="", plan="enterprise", labels={}, ctx=CTX
        )
        self.store.append(tenant)
        return replace(self.admin, tenant_id=tenant.tenant_id, tenant=None)

    def stored_states(self) -> bytes:
        notes = self.store.recorder.select_notifications(start=1, limit=10_000)
        return b"\n".join(note.state for note in notes)

    def create(self, name: str = "warehouse", **fields: Any) -> Any:  # type: ignore[override]
        return self.connections.create(
            fields.pop("principal", self.admin),
            CTX,
            name=name,
            type_=fields.pop("type_", "postgres"),
            config=fields.pop("config", PG),
            **fields,
        )


@pytest.fixture
def tenancy(tmp_path: Path) -> Tenancy:
    return Tenancy(tmp_path)


def fields_of(refused: pytest.ExceptionInfo[InvalidConnection]) -> dict[str, str]:
    return {e.field: e.message for e in refused.value.errors}


def test_create_keeps_references_and_config_of_answers_the_live_connection(
    tenancy: Tenancy,
) -> None:
    made = tenancy.create(description="the warehouse")
    assert made.version == 1 and made.state.config == PG
    assert tenancy.connections.config_of(tenancy.tenant_id, "warehouse") == ConnectionConfig(
        "postgres", PG
    )
    assert tenancy.connections.config_of(tenancy.tenant_id, "nope") is None
    assert tenancy.connections.config_of(tenancy.tenant_id, "not a name") is None
    assert tenancy.connections.config_of(str(uuid4()), "warehouse") is None  # another tenant
    assert PASSWORD.encode() not in tenancy.stored_states()


def test_a_plain_credential_is_refused_naming_the_field_and_stores_nothing(
    tenancy: Tenancy,
) -> None:
    before = tenancy.stored_states()
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create(config={**PG, "password": PASSWORD})
    problems = fields_of(refused)
    assert list(problems) == ["config.password"]
    assert "POST /api/v1/secrets" in problems["config.password"]
    assert PASSWORD not in str(refused.value)
    header = {"base_url": "https://api.example.com", "headers": {"Authorization": PASSWORD}}
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create("api", type_="http", config=header)
    assert list(fields_of(refused)) == ["config.headers.Authorization"]
    assert PASSWORD not in str(refused.value)
    assert tenancy.stored_states() == before


def test_references_must_name_a_live_secret_and_version_of_the_same_tenant(
    tenancy: Tenancy,
) -> None:
    unknown = {
        **PG,
        "password": {"secret": "nope"},
        "user": {"secret": "db-password", "version": 2},
    }
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create(config=unknown)
    problems = fields_of(refused)
    assert "no secret named 'nope'" in problems["config.password"]
    assert "has no version 2" in problems["config.user"]
    pinned = {**PG, "password": {"secret": "db-password", "version": 1}}
    assert tenancy.create(config=pinned).state.config == pinned
    # A tenant's secret is no other tenant's, whichever name is guessed.
    other = tenancy.other_tenant()
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create(principal=other, config=PG)
    assert "no secret named 'db-password'" in fields_of(refused)["config.password"]
    tenancy.secrets.create(other, CTX, name="theirs", value=PASSWORD)
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create("w2", config={**PG, "password": {"secret": "theirs"}})
    assert "no secret named 'theirs'" in fields_of(refused)["config.password"]
    tenancy.secrets.delete(tenancy.admin, "db-password", CTX, force=True)
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create("again", config=PG)
    assert "no secret named 'db-password'" in fields_of(refused)["config.password"]


def test_schema_problems_and_unknown_types_are_listed_by_field(tenancy: Tenancy) -> None:
    for config, field, message in (
        ({**PG, "extra": 1}, "config.extra", "unknown field"),
        ({**PG, "port": "5432"}, "config.port", "Expected `int`, got `str`"),
        ({"host": "h", "user": "u"}, "config.database", "required"),
    ):
        with pytest.raises(InvalidConnection) as refused:
            tenancy.create(config=config)
        assert fields_of(refused) == {field: message}
    with pytest.raises(InvalidConnection) as refused:
        tenancy.create(type_="ftp", config={})
    assert "unknown connection type 'ftp'" in fields_of(refused)["type"]


def test_a_name_is_unique_in_its_tenant_and_taken_again_after_a_delete(tenancy: Tenancy) -> None:
    made = tenancy.create()
    with pytest.raises(NameTaken):
        tenancy.create()
    tenancy.connections.delete(tenancy.admin, "warehouse", CTX)
    again = tenancy.create(type_="http", config={"base_url": "https://api.example.com"})
    assert again.state.id == made.state.id and again.state.type == "http"
    assert tenancy.connections.config_of(tenancy.tenant_id, "warehouse") == ConnectionConfig(
        "http", {"base_url": "https://api.example.com"}
    )


def test_update_checks_the_new_config_if_match_and_the_type(tenancy: Tenancy) -> None:
    tenancy.create()
    changed = tenancy.connections.update(
        tenancy.admin, "warehouse", CTX, config={**PG, "port": 5433}, expected_version=1
    )
    assert changed.version == 2 and changed.state.config["port"] == 5433
    with pytest.raises(VersionConflict):
        tenancy.connections.update(tenancy.admin, "warehouse", CTX, config=PG, expected_version=1)
    with pytest.raises(InvalidConnection) as refused:
        tenancy.connections.update(
            tenancy.admin, "warehouse", CTX, config={**PG, "password": PASSWORD}
        )
    assert list(fields_of(refused)) == ["config.password"]
    with pytest.raises(InvalidCommand) as wrong_type:
        tenancy.connections.update(
            tenancy.admin, "warehouse", CTX, config={"base_url": "https://x.example"}, type_="http"
        )
    assert wrong_type.value.field == "type"
    assert tenancy.connections.load(tenancy.admin, "warehouse").config["port"] == 5433


def test_a_delete_is_refused_while_pipelines_use_it_unless_forced(tenancy: Tenancy) -> None:
    tenancy.create()
    tenancy.refs.refs[(tenancy.tenant_id, "warehouse")] = [ConnectionReference("p1", "orders")]
    with pytest.raises(ConnectionReferenced, match="orders"):
        tenancy.connections.delete(tenancy.admin, "warehouse", CTX)
    assert tenancy.connections.config_of(tenancy.tenant_id, "warehouse") is not None
    deleted = tenancy.connections.delete(tenancy.admin, "warehouse", CTX, force=True)
    assert deleted.state.deleted
    (event,) = [e for e in tenancy.store.stream(deleted.state.id) if type(e) is ConnectionDeleted]
    assert event.forced is True
    assert tenancy.connections.config_of(tenancy.tenant_id, "warehouse") is None


def test_another_tenant_cannot_read_change_or_delete_a_connection_by_its_name(
    tenancy: Tenancy,
) -> None:
    tenancy.create()
    other = tenancy.other_tenant()
    with pytest.raises(NotFound):
        tenancy.connections.load(other, "warehouse")
    with pytest.raises(NotFound):
        tenancy.connections.update(other, "warehouse", CTX, config=PG)
    with pytest.raises(NotFound):
        tenancy.connections.delete(other, "warehouse", CTX, force=True)
    nobody = replace(tenancy.admin, tenant_id=None, tenant=None)  # a platform admin, no tenant
    with pytest.raises(NotFound):
        tenancy.connections.load(nobody, "warehouse")
    assert tenancy.connections.load(tenancy.admin, "warehouse").version == 1
    assert tenancy.connections.config_of(other.tenant_id or "", "warehouse") is None


def test_a_create_retried_after_a_crash_answers_the_first_even_for_a_name_taken_again(
    tenancy: Tenancy,
) -> None:
    """The id derives from the name, not the Idempotency-Key: the earlier attempt's
    create (or recreate) is known by its cause; anyone else's is a taken name."""

    def attempt(key_id: str, earlier: bool = False) -> CommandContext:
        idempotency = Idempotency(key_id, earlier_attempt=earlier)
        return CommandContext("user:u2", "corr-1", idempotency.causation_id, idempotency)

    def create(ctx: CommandContext) -> Any:
        return tenancy.connections.create(
            tenancy.admin, ctx, name="warehouse", type_="postgres", config=PG
        )

    first = create(attempt("k1"))
    retry = create(attempt("k1", earlier=True))
    assert (retry.version, retry.position, retry.replayed) == (first.version, first.position, True)
    with pytest.raises(NameTaken):
        create(attempt("k2", earlier=True))
    tenancy.connections.delete(tenancy.admin, "warehouse", CTX)
    again = create(attempt("k3"))
    retried = create(attempt("k3", earlier=True))
    assert (retried.version, retried.position, retried.replayed) == (
        again.version,
        again.position,
        True,
    )
