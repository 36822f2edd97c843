"""The User aggregate: a person who logs in, belonging to one tenant (or to the
platform, for platform administrators)."""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import InvalidCommand
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


class User(Aggregate):
    def __init__(
        self, tenant_id: str | None, username: str, password_hash: str, roles: tuple[str, ...]
    ) -> None:
        self.tenant_id = tenant_id
        self.username = username
        self.password_hash = password_hash
        self.roles = tuple(roles)
        self.active = True

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
        if not roles:
            raise InvalidCommand("at least one role is required", "roles")
        if tenant_id is None and roles != (PLATFORM_ADMIN,):
            raise InvalidCommand("a user without a tenant must be a platform_admin", "tenant_id")
        if tenant_id is not None:
            unknown = [r for r in roles if r not in TENANT_ROLES]
            if unknown:
                raise InvalidCommand(
                    f"unknown role(s) {', '.join(unknown)}; use {', '.join(TENANT_ROLES)}",
                    "roles",
                )
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
