"""User use cases: register, change roles or activation, change a password, delete, and
the bootstrap platform admin."""

from __future__ import annotations

from uuid import UUID, uuid4

from application.authorization import (
    check_may_grant,
    check_password_change,
    check_user_placement,
    is_self,
    sees,
)
from application.commands import Aggregates
from application.errors import PermissionDenied
from application.event_store import NornEventStore
from application.idempotency import earlier_creation
from application.ports import PasswordHasher
from application.principal import Principal
from application.results import Changed
from domain.errors import Conflict, InvalidCommand, WrongPassword
from domain.events import CommandContext
from domain.tenant import Tenant, TenantStatus
from domain.user import PLATFORM_ADMIN, User, user_id_for

MIN_PASSWORD = 10
MAX_PASSWORD = 1024


def check_password_policy(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidCommand(f"password must be at least {MIN_PASSWORD} characters", "password")
    if len(password) > MAX_PASSWORD:
        raise InvalidCommand(f"password must be at most {MAX_PASSWORD} characters", "password")
    if username.casefold() in password.casefold():
        raise InvalidCommand("password must not contain the username", "password")


class UserService:
    def __init__(self, store: NornEventStore, hasher: PasswordHasher) -> None:
        self._store = store
        self._hasher = hasher
        # Users an admin administers: its tenant's (a platform admin outside a tenant:
        # every one); and one's own user, which a user reaches to change its password.
        self._users = Aggregates(
            store,
            User,
            "user",
            scope=lambda principal, user: sees(principal, user.tenant_id),
            gone=lambda user: user.deleted,
        )
        self._yourself = Aggregates(
            store,
            User,
            "user",
            scope=lambda principal, user: is_self(principal, str(user.id)),
            gone=lambda user: user.deleted,
        )

    def create(
        self,
        principal: Principal,
        *,
        username: str,
        password: str,
        tenant_id: str | None,
        roles: tuple[str, ...],
        ctx: CommandContext,
    ) -> Changed[User]:
        check_user_placement(principal, tenant_id, roles)
        if tenant_id is not None:
            tenant = self._find_tenant(tenant_id)
            if tenant is None or tenant.status == TenantStatus.DELETED:
                raise InvalidCommand(f"tenant {tenant_id} does not exist", "tenant_id")
            if not tenant.writable:
                raise PermissionDenied(f"tenant {tenant_id} is {tenant.status}")
        check_password_policy(username, password)
        user = User.register(
            username=username,
            password_hash=self._hasher.hash(password),
            tenant_id=tenant_id,
            roles=roles,
            ctx=ctx,
        )
        earlier = earlier_creation(self._store, User, user.id, ctx)
        if earlier is not None:  # an earlier attempt of this idempotent request made it
            return earlier
        if self._store.find(User, user.id) is not None:
            raise Conflict(f"username {username!r} is already taken", "username")
        return self._users.save(user)

    def load(self, principal: Principal, user_id: UUID) -> User:
        """A live user the principal administers (another tenant's is NotFound)."""
        return self._users.load(principal, user_id)

    def update(
        self,
        principal: Principal,
        user_id: UUID,
        *,
        roles: tuple[str, ...] | None,
        active: bool | None,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[User]:
        def decide(user: User) -> None:
            if is_self(principal, str(user.id)):
                # An admin who demotes or locks out itself may leave nobody to undo it.
                if (roles is not None and set(roles) != set(user.roles)) or active is False:
                    raise InvalidCommand("you cannot change your own roles or deactivate yourself")
            if roles is not None:
                check_may_grant(principal, roles)
                user.change_roles(tuple(roles), ctx)
            if active is not None:
                user.set_active(active, ctx)

        return self._users.change(principal, user_id, decide, expected_version, ctx=ctx)

    def delete(
        self,
        principal: Principal,
        user_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[User]:
        def decide(user: User) -> None:
            if is_self(principal, str(user.id)):
                raise InvalidCommand("you cannot delete yourself")
            user.delete(ctx)

        return self._users.change(principal, user_id, decide, expected_version, ctx=ctx)

    def change_password(
        self,
        principal: Principal,
        user_id: UUID,
        *,
        current_password: str | None,
        new_password: str,
        ctx: CommandContext,
    ) -> Changed[User]:
        """Users change their own password by proving the current one; admins reset the
        passwords of users they administer. Either way every session of the user ends."""
        check_password_change(principal, str(user_id))
        own = is_self(principal, str(user_id))

        def decide(user: User) -> None:
            if own:
                if current_password is None:
                    raise InvalidCommand("current_password is required", "current_password")
                if not self._hasher.verify(user.password_hash, current_password):
                    # Not AuthenticationFailed: the caller is authenticated, and a 401
                    # would make clients drop or refresh a token that is fine. A wrong
                    # answer in the form is a validation error on that field.
                    raise WrongPassword("the current password is wrong", "current_password")
            check_password_policy(user.username, new_password)
            user.change_password(self._hasher.hash(new_password), ctx)

        return (self._yourself if own else self._users).change(principal, user_id, decide, ctx=ctx)

    def ensure_platform_admin(self, username: str, password: str) -> bool:
        """Create the bootstrap platform admin unless that user exists. True if created."""
        if self._store.find(User, user_id_for(username)) is not None:
            return False
        check_password_policy(username, password)
        ctx = CommandContext(actor="system:bootstrap", correlation_id=str(uuid4()))
        user = User.register(
            username=username,
            password_hash=self._hasher.hash(password),
            tenant_id=None,
            roles=(PLATFORM_ADMIN,),
            ctx=ctx,
        )
        self._store.append(user)
        return True

    def _find_tenant(self, tenant_id: str) -> Tenant | None:
        try:
            return self._store.find(Tenant, UUID(tenant_id))
        except ValueError:
            return None
