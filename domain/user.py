"""The User aggregate: a person who logs in, belonging to one tenant (or to the
platform, for platform administrators).

`credentials_version` counts the changes that must end every session of the user at once
(a new password, deactivation, deletion): a session records the version it began under
and is void when the user's version has moved on."""

from __future__ import annotations

import re
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent

PLATFORM_ADMIN = "platform_admin"
TENANT_ROLES = ("admin", "editor", "operator", "viewer")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{2,63}$")


def user_id_for(username: str) -> UUID:
    """Usernames are unique platform-wide: the id is derived from the name, so a second
    registration of a name collides in the event store, and login finds the user
    without a read model."""
    return uuid5(NAMESPACE_URL, f"norn:user:{username.strip().casefold()}")


class UserEvent(NornEvent):
    aggregate_type = "user"


class UserRegistered(UserEvent, NornCreated):
    private_fields = frozenset({"password_hash"})
    username: str
    password_hash: str
    roles: tuple[str, ...]


class UserRolesChanged(UserEvent):
    roles: tuple[str, ...]

    def apply(self, aggregate: User) -> None:
        aggregate.roles = tuple(self.roles)


class UserDeactivated(UserEvent):
    def apply(self, aggregate: User) -> None:
        aggregate.active = False
        aggregate.credentials_version += 1


class UserReactivated(UserEvent):
    def apply(self, aggregate: User) -> None:
        aggregate.active = True


class UserPasswordChanged(UserEvent):
    private_fields = frozenset({"password_hash"})
    password_hash: str

    def apply(self, aggregate: User) -> None:
        aggregate.password_hash = self.password_hash
        aggregate.credentials_version += 1


class UserDeleted(UserEvent):
    """Soft: the user can no longer log in, its events stay for audit, and its username
    stays reserved (the id derives from it)."""

    def apply(self, aggregate: User) -> None:
        aggregate.deleted = True
        aggregate.active = False
        aggregate.credentials_version += 1


class User(Aggregate):
    def __init__(
        self, tenant_id: str | None, username: str, password_hash: str, roles: tuple[str, ...]
    ) -> None:
        self.tenant_id = tenant_id
        self.username = username
        self.password_hash = password_hash
        self.roles = tuple(roles)
        self.active = True
        self.deleted = False
        self.credentials_version = 1

    @classmethod
    def register(
        cls,
        *,
        username: str,
        password_hash: str,
        tenant_id: str | None,
        roles: tuple[str, ...],
        ctx: CommandContext,
    ) -> User:
        if not USERNAME.fullmatch(username):
            raise InvalidCommand(
                "username must be 3-64 letters, digits, '_', '.', '@' or '-'", "username"
            )
        _check_roles(tenant_id, roles)
        return cls._create(
            UserRegistered,
            id=user_id_for(username),
            tenant_id=tenant_id,
            username=username,
            password_hash=password_hash,
            roles=tuple(dict.fromkeys(roles)),
            **ctx.event_fields(),
        )

    @property
    def is_platform_admin(self) -> bool:
        return PLATFORM_ADMIN in self.roles

    @property
    def can_authenticate(self) -> bool:
        return self.active and not self.deleted

    def change_roles(self, roles: tuple[str, ...], ctx: CommandContext) -> bool:
        """Replace the roles; False (nothing recorded) when they are the same. Roles are
        a set: the same ones in another order are no change."""
        self._require_not_deleted()
        _check_roles(self.tenant_id, roles)
        roles = tuple(dict.fromkeys(roles))
        if set(roles) == set(self.roles):
            return False
        self._trigger(UserRolesChanged, ctx, roles=roles)
        return True

    def set_active(self, active: bool, ctx: CommandContext) -> bool:
        self._require_not_deleted()
        if active == self.active:
            return False
        self._trigger(UserReactivated if active else UserDeactivated, ctx)
        return True

    def change_password(self, password_hash: str, ctx: CommandContext) -> None:
        """Record a new password hash (the policy is checked before hashing, by the
        application); every existing session of the user ends."""
        self._require_not_deleted()
        self._trigger(UserPasswordChanged, ctx, password_hash=password_hash)

    def delete(self, ctx: CommandContext) -> None:
        self._require_not_deleted()
        self._trigger(UserDeleted, ctx)

    def _require_not_deleted(self) -> None:
        if self.deleted:
            raise AggregateDeleted(f"user {self.id} was deleted")

    def _trigger(self, event_class: type[UserEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)


def _check_roles(tenant_id: str | None, roles: tuple[str, ...]) -> None:
    if not roles:
        raise InvalidCommand("at least one role is required", "roles")
    if tenant_id is None and tuple(dict.fromkeys(roles)) != (PLATFORM_ADMIN,):
        raise InvalidCommand("a user without a tenant must be a platform_admin", "tenant_id")
    if tenant_id is not None:
        unknown = [r for r in roles if r not in TENANT_ROLES]
        if unknown:
            raise InvalidCommand(
                f"unknown role(s) {', '.join(unknown)}; use {', '.join(TENANT_ROLES)}",
                "roles",
            )
