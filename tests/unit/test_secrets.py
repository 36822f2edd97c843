"""Tenant secrets (README "Secrets"): the Secret aggregate given-when-then, the envelope
cipher (infrastructure/secret_store.py), and SecretService on the in-memory store with
the production cipher: values are in no event, a delete crypto-shreds, rotation
re-wraps data keys and leaves values readable, another tenant's name is not found."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import pytest

from application.errors import NotFound
from application.ports import SecretReference
from application.secrets import SecretReferenced, SecretService, SecretUnreadable
from domain.errors import AggregateDeleted, Conflict, InvalidCommand, NameTaken
from domain.secret import (
    Secret,
    SecretCreated,
    SecretDeleted,
    SecretRecreated,
    SecretUpdated,
    SecretVersionAdded,
    secret_id,
)
from infrastructure.secret_store import (
    MasterKeys,
    data_dir_master_keys,
    new_data_key,
    new_master_key,
    open_value,
    parse_master_key,
    rotate_data_dir_master_key,
    seal_value,
)
from tests.support.deployments import CTX, World
from tests.support.memory import MemorySecretReferences, MemorySecretValues

VALUE = "hunter2-Distinctive-Value-7f3a"
NEWER = "second-Distinctive-Value-91bc"


def make(**fields: object) -> Secret:
    return Secret.create(
        tenant_id="t1", name=str(fields.pop("name", "db-password")), value_id=uuid4(), ctx=CTX
    )


# --- the aggregate ------------------------------------------------------------------------


def test_created_secret_has_version_one_and_an_id_from_tenant_and_name() -> None:
    secret = make()
    (event,) = secret.collect_events()
    assert isinstance(event, SecretCreated)
    assert (event.name, event.value_version) == ("db-password", 1)
    assert secret.id == secret_id("t1", "db-password") != secret_id("t2", "db-password")
    assert secret_id("t1", "Db-Password") != secret.id  # names are case-sensitive
    assert "value_id" in SecretCreated.private_fields  # in the store, not in feeds


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "x" * 101, "a/b"])
def test_names_follow_the_step_name_rule(name: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        make(name=name)
    assert refused.value.field == "name"


def test_versions_count_up_and_updates_record_only_changes() -> None:
    secret = make()
    assert secret.add_version(CTX, uuid4()) == 2
    assert secret.update(CTX, description="the warehouse") is True
    assert secret.update(CTX, description="the warehouse") is False
    with pytest.raises(InvalidCommand) as refused:
        secret.update(CTX, allowed_hosts=("not a host",))
    assert refused.value.field == "allowed_hosts[0]"
    kinds = [type(e) for e in secret.collect_events()]
    assert kinds == [SecretCreated, SecretVersionAdded, SecretUpdated]


def test_a_deleted_secret_takes_no_command_but_can_be_recreated_with_later_versions() -> None:
    secret = make()
    secret.add_version(CTX, uuid4())
    secret.delete(CTX, forced=False)
    assert secret.value_id_of(None) is None
    with pytest.raises(AggregateDeleted):
        secret.add_version(CTX, uuid4())
    value_id = uuid4()
    secret.recreate(CTX, value_id=value_id)
    assert secret.value_version == 3  # not 1: a pin to the old version 1 never resolves
    assert secret.value_id_of(None) == value_id
    assert secret.value_id_of(1) is None and secret.value_id_of(2) is None
    with pytest.raises(Conflict):
        secret.recreate(CTX, value_id=uuid4())
    kinds = [type(e) for e in secret.collect_events()]
    assert kinds[-2:] == [SecretDeleted, SecretRecreated]


# --- the cipher ---------------------------------------------------------------------------


def test_a_value_round_trips_and_fails_under_a_wrong_key_or_place() -> None:
    key, sid, vid = new_data_key(), uuid4(), uuid4()
    nonce, sealed = seal_value(key, sid, 1, vid, VALUE)
    assert VALUE.encode() not in sealed
    assert open_value(key, sid, 1, vid, nonce, sealed) == VALUE
    assert open_value(new_data_key(), sid, 1, vid, nonce, sealed) is None
    assert open_value(key, sid, 2, vid, nonce, sealed) is None  # moved to another version
    assert open_value(key, uuid4(), 1, vid, nonce, sealed) is None  # onto another secret


def test_a_data_key_unwraps_only_under_its_master_key_and_secret() -> None:
    master, other = MasterKeys([new_master_key()]), MasterKeys([new_master_key()])
    sid, data_key = uuid4(), new_data_key()
    wrapped = master.wrap(sid, data_key)
    assert master.unwrap(sid, *wrapped) == data_key
    assert other.unwrap(sid, *wrapped) is None
    assert master.unwrap(uuid4(), *wrapped) is None


@pytest.mark.parametrize(
    "bad",
    ["", "short", "x" * 42 + "!", new_master_key() + "AAAA"],
    # Named, not by value: a random key in a test id differs between pytest-xdist's
    # workers, which then refuse to run the suite.
    ids=["empty", "short", "not-base64url", "too-long"],
)
def test_a_malformed_master_key_is_refused_without_quoting_it(bad: str) -> None:
    with pytest.raises(ValueError, match="base64url") as refused:
        parse_master_key(bad)
    assert not bad or bad not in str(refused.value)


def test_the_data_dir_key_is_made_once_private_and_rotation_keeps_the_previous(
    tmp_path: Path,
) -> None:
    first = data_dir_master_keys(tmp_path)
    assert first == data_dir_master_keys(tmp_path) and len(first) == 1
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.key"]  # no temp left
    rotated = rotate_data_dir_master_key(tmp_path)
    assert rotated[1:] == first and rotated[0] != first[0]
    assert data_dir_master_keys(tmp_path) == rotated
    assert (tmp_path / "secrets.previous").stat().st_mode & 0o777 == 0o600


def test_processes_starting_at_once_share_one_data_dir_key(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: data_dir_master_keys(tmp_path)[0], range(32)))
    assert len(set(keys)) == 1


# --- the service ----------------------------------------------------------------------------


class Vault(World):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.values = MemorySecretValues(MasterKeys([new_master_key()]))
        self.refs = MemorySecretReferences()
        self.secrets = SecretService(self.store, self.values, self.refs)

    def stored_states(self) -> bytes:
        notes = self.store.recorder.select_notifications(start=1, limit=10_000)
        return b"\n".join(note.state for note in notes)


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path)


def test_create_and_put_keep_values_out_of_every_event_and_resolve_them(vault: Vault) -> None:
    made = vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    put = vault.secrets.put_version(vault.admin, "db", CTX, value=NEWER, description="d")
    assert (made.state.value_version, put.state.value_version) == (1, 2)
    assert put.state.description == "d"
    states = vault.stored_states()
    for value in (VALUE, NEWER):
        assert value.encode() not in states
        assert all(value.encode() not in row[3] for row in vault.values.values.values())
    assert vault.secrets.resolve(vault.tenant_id, "db") == NEWER
    assert vault.secrets.resolve(vault.tenant_id, "db", 1) == VALUE
    with pytest.raises(NotFound):
        vault.secrets.resolve(vault.tenant_id, "db", 3)


def test_a_name_is_unique_in_its_tenant_and_invalid_input_stores_nothing(vault: Vault) -> None:
    vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    with pytest.raises(NameTaken):
        vault.secrets.create(vault.admin, CTX, name="db", value=NEWER)
    with pytest.raises(InvalidCommand) as refused:
        vault.secrets.create(vault.admin, CTX, name="other", value="")
    assert refused.value.field == "value"
    assert len(vault.values.values) == 1


def test_another_tenant_cannot_read_or_change_a_secret_even_by_its_name(vault: Vault) -> None:
    vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    stranger = replace(vault.admin, tenant_id=str(uuid4()), tenant=None)
    for command in (
        lambda: vault.secrets.load(stranger, "db"),
        lambda: vault.secrets.delete(stranger, "db", CTX),
        lambda: vault.secrets.resolve(str(uuid4()), "db"),
    ):
        with pytest.raises(NotFound):
            command()
    assert vault.secrets.resolve(vault.tenant_id, "db") == VALUE


def test_delete_crypto_shreds_and_nothing_left_decrypts_an_old_copy(vault: Vault) -> None:
    made = vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    sid = made.state.id
    copies = dict(vault.values.values)  # a backup taken before the delete
    vault.secrets.delete(vault.admin, "db", CTX)
    with pytest.raises(NotFound):
        vault.secrets.resolve(vault.tenant_id, "db")
    assert sid not in vault.values.keys
    # The old ciphertexts against every data key the store still holds: none opens.
    vault.secrets.create(vault.admin, CTX, name="other", value=NEWER)
    for value_id, (secret, version, nonce, sealed) in copies.items():
        for holder, wrapped in vault.values.keys.items():
            data_key = vault.values.master.unwrap(holder, *wrapped)
            assert data_key is not None
            assert open_value(data_key, secret, version, value_id, nonce, sealed) is None


def test_a_delete_refused_while_referenced_unless_forced(vault: Vault) -> None:
    vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    vault.refs.refs[(vault.tenant_id, "db")] = [SecretReference("p1", "orders")]
    with pytest.raises(SecretReferenced, match="orders"):
        vault.secrets.delete(vault.admin, "db", CTX)
    assert vault.secrets.resolve(vault.tenant_id, "db") == VALUE
    deleted = vault.secrets.delete(vault.admin, "db", CTX, force=True)
    assert deleted.state.deleted


def test_a_deleted_name_is_created_again_with_a_new_key_and_later_versions(vault: Vault) -> None:
    vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    vault.secrets.delete(vault.admin, "db", CTX)
    again = vault.secrets.create(vault.admin, CTX, name="db", value=NEWER)
    assert again.state.value_version == 2
    assert vault.secrets.resolve(vault.tenant_id, "db") == NEWER
    with pytest.raises(NotFound):
        vault.secrets.resolve(vault.tenant_id, "db", 1)


def test_a_lost_data_key_reads_as_unreadable_refuses_versions_and_is_deleted(
    vault: Vault,
) -> None:
    """A delete that destroyed the key and crashed before its event (or a new version
    racing a delete): no new data key is made for it, so nothing becomes readable."""
    made = vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    vault.values.destroy(made.state.id)
    with pytest.raises(SecretUnreadable):
        vault.secrets.resolve(vault.tenant_id, "db")
    with pytest.raises(SecretUnreadable):
        vault.secrets.put_version(vault.admin, "db", CTX, value=NEWER)
    assert vault.values.keys == {} and vault.values.values == {}
    vault.secrets.delete(vault.admin, "db", CTX)
    vault.secrets.create(vault.admin, CTX, name="db", value=NEWER)
    assert vault.secrets.resolve(vault.tenant_id, "db") == NEWER


def test_rotation_rewraps_data_keys_and_old_values_stay_readable(vault: Vault) -> None:
    vault.secrets.create(vault.admin, CTX, name="db", value=VALUE)
    old_key, new_key = new_master_key(), new_master_key()
    vault.values.master = old = MasterKeys([old_key])
    vault.secrets.delete(vault.admin, "db", CTX)  # made again under `old` by the create
    vault.secrets.create(vault.admin, CTX, name="db", value=NEWER)
    rotating = MasterKeys([new_key, old_key])
    for sid, wrapped in list(vault.values.keys.items()):  # what rewrap_all does to each row
        rewrapped = rotating.rewrap(sid, *wrapped)
        assert rewrapped is not None and rewrapped[0] == rotating.current_id != old.current_id
        vault.values.keys[sid] = rewrapped
    vault.values.master = MasterKeys([new_key])  # the old key dropped once rotated
    assert vault.secrets.resolve(vault.tenant_id, "db") == NEWER
    assert MasterKeys([old_key]).rewrap(sid, *vault.values.keys[sid]) is None
