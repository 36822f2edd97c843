"""Secret use cases (README "Secrets"): create, put a new value version (with any
metadata change), delete (refused while pipelines reference it, unless forced), and
`resolve`, which the executor will call to read a value.

Order of writes, so that a crash between two never leaves a readable value where it
must not be: a value is sealed (encrypted, kept) before the event that makes it
current, so a crash leaves an unreferenced ciphertext, harmless; a delete destroys the
secret's data key before appending SecretDeleted, so a crash leaves a live secret
whose values can no longer be read (resolve and a new version say so; delete it and
create it again), never a deleted secret whose values still can. Only a create makes a
data key: a new version racing a delete finds none and is refused.

No value is in an event, an answer, an error message or a log line: the service takes
a value in and hands one out only from `resolve`.
"""

from __future__ import annotations

import uuid
from uuid import UUID

from application.authorization import sees
from application.commands import Aggregates
from application.errors import NotFound
from application.event_store import NornEventStore
from application.ports import SecretFacts, SecretReference, SecretReferences, SecretValues
from application.principal import Principal
from application.results import Changed
from application.tenants import writable_tenant
from domain.errors import Conflict, InvalidCommand, NameTaken
from domain.events import CommandContext
from domain.secret import Secret, check_metadata, check_name, check_value, secret_id


class SecretUnreadable(Conflict):
    """The secret exists but its value cannot be read: its data key was destroyed by a
    delete that did not finish, or the master key that wraps it is not configured."""


class SecretReferenced(Conflict):
    """A delete refused while pipelines reference the secret (?force=true deletes)."""

    def __init__(self, name: str, references: list[SecretReference]) -> None:
        self.references = references
        names = ", ".join(sorted(f"{r.kind} {r.pipeline_name}" for r in references))
        super().__init__(
            f"secret {name!r} is referenced by {names}; delete with force=true to delete it anyway",
            "name",
        )


def secret_facts(store: NornEventStore, tenant_id: str, name: str) -> SecretFacts | None:
    """What step validation needs of a tenant's live secret (None: it has none)."""
    try:
        check_name(name)
    except InvalidCommand:
        return None
    secret = store.find(Secret, secret_id(tenant_id, name))
    if secret is None or secret.deleted:
        return None
    return SecretFacts(name, secret.value_version, secret.allowed_hosts, secret.namespaces)


class SecretService:
    def __init__(
        self, store: NornEventStore, values: SecretValues, references: SecretReferences
    ) -> None:
        self._store = store
        self._values = values
        self._references = references
        self._secrets = Aggregates(
            store,
            Secret,
            "secret",
            scope=lambda principal, secret: sees(principal, secret.tenant_id),
            gone=lambda secret: secret.deleted,
        )

    def load(self, principal: Principal, name: str) -> Secret:
        """The secret by name in the principal's tenant; NotFound otherwise (a name is
        looked up in the principal's own tenant only, so a guessed name of another
        tenant's secret is not found)."""
        return self._secrets.load(principal, self._id(principal, name))

    def create(
        self,
        principal: Principal,
        ctx: CommandContext,
        *,
        name: str,
        value: str,
        description: str = "",
        allowed_hosts: tuple[str, ...] = (),
        namespaces: tuple[str, ...] = (),
    ) -> Changed[Secret]:
        """A new secret (value version 1), or the name of a deleted one taken again."""
        tenant = writable_tenant(self._store, principal)
        check_name(name)
        check_value(value)
        check_metadata(description, allowed_hosts, namespaces)
        existing = self._store.find(Secret, secret_id(tenant.tenant_id, name))
        # No Idempotency-Key reaches here (the API refuses one on writes carrying a
        # value: its digest of the body would be a hash of the value).
        if existing is not None and not existing.deleted:
            raise NameTaken("secret", name, str(existing.id))
        value_id = uuid.uuid4()
        if existing is None:
            secret = Secret.create(
                tenant_id=tenant.tenant_id,
                name=name,
                value_id=value_id,
                ctx=ctx,
                description=description,
                allowed_hosts=allowed_hosts,
                namespaces=namespaces,
            )
        else:
            secret = existing
            secret.recreate(
                ctx,
                value_id=value_id,
                description=description,
                allowed_hosts=allowed_hosts,
                namespaces=namespaces,
            )
        self._seal(secret, secret.value_version, value_id, value, new_key=True)
        return self._secrets.save(secret)

    def put_version(
        self,
        principal: Principal,
        name: str,
        ctx: CommandContext,
        *,
        value: str,
        description: str | None = None,
        allowed_hosts: tuple[str, ...] | None = None,
        namespaces: tuple[str, ...] | None = None,
        expected_version: int | None = None,
    ) -> Changed[Secret]:
        """A new value version (and the metadata named, in the same append)."""
        writable_tenant(self._store, principal)
        check_value(value)

        def decide(secret: Secret) -> None:
            secret.update(
                ctx, description=description, allowed_hosts=allowed_hosts, namespaces=namespaces
            )
            value_id = uuid.uuid4()
            version = secret.next_value_version
            self._seal(secret, version, value_id, value, new_key=False)
            secret.add_version(ctx, value_id)

        return self._secrets.change(
            principal, self._id(principal, name), decide, expected_version, ctx
        )

    def delete(
        self,
        principal: Principal,
        name: str,
        ctx: CommandContext,
        *,
        force: bool = False,
        expected_version: int | None = None,
    ) -> Changed[Secret]:
        """Crypto-shred: the data key is destroyed (every stored copy of every version
        becomes unreadable), then SecretDeleted is appended. Refused (409, naming them)
        while pipelines reference the secret, unless `force`."""
        tenant = writable_tenant(self._store, principal)

        def decide(secret: Secret) -> None:
            references = self._references.referencing(tenant.tenant_id, secret.name)
            if references and not force:
                raise SecretReferenced(secret.name, references)
            secret.delete(ctx, forced=bool(references))
            self._values.destroy(secret.id)

        return self._secrets.change(
            principal, self._id(principal, name), decide, expected_version, ctx
        )

    def references(self, principal: Principal, name: str) -> list[SecretReference]:
        """The pipelines of the principal's tenant that reference the secret."""
        secret = self.load(principal, name)
        return self._references.referencing(secret.tenant_id, secret.name)

    def resolve(self, tenant_id: str, name: str, version: int | None = None) -> str:
        """The value of a tenant's secret (its current version, or the one named), for
        the executor: NotFound if the tenant has no such live secret or version,
        SecretUnreadable if it has but the value cannot be decrypted. The caller is
        trusted to name the run's own tenant: this is not an API use case."""
        secret = self._store.find(Secret, secret_id(tenant_id, name))
        value_id = None if secret is None else secret.value_id_of(version)
        if secret is None or value_id is None:
            what = name if version is None else f"{name} version {version}"
            raise NotFound("secret", what)
        value = self._values.open(secret.id, version or secret.value_version, value_id)
        if value is None:
            raise SecretUnreadable(f"secret {name!r} cannot be decrypted", "name")
        return value

    def use(self, tenant_id: str, name: str, version: int | None) -> tuple[SecretFacts, str]:
        """For a step that references the secret: what it may be used for, and the
        value (of `version`, else the newest)."""
        facts = secret_facts(self._store, tenant_id, name)
        if facts is None:
            raise NotFound("secret", name)
        return facts, self.resolve(tenant_id, name, version)

    def _seal(
        self, secret: Secret, version: int, value_id: UUID, value: str, *, new_key: bool
    ) -> None:
        if not self._values.seal(
            secret.id, secret.tenant_id, version, value_id, value, new_key=new_key
        ):
            raise SecretUnreadable(
                f"secret {secret.name!r} has no usable data key (a delete did not finish, or"
                " its master key is not configured): delete it and create it again",
                "name",
            )

    def _id(self, principal: Principal, name: str) -> UUID:
        """The id of `name` in the principal's tenant. A platform admin outside any
        tenant names none, so it finds nothing: secrets are the tenant's business."""
        if principal.tenant_id is None:
            raise NotFound("secret", name)
        try:
            check_name(name)
        except InvalidCommand:
            raise NotFound("secret", name) from None
        return secret_id(principal.tenant_id, name)
