"""User use cases: register, change roles or activation, change a password, delete, and
the bootstrap platform admin."""

from __future__ import annotations

from uuid import UUID, uuid4

from application.authorization import Permission, authorize
from application.errors import NotFound, PermissionDenied
from application.event_store import NornEventStore, check_expected_version
from application.ports import PasswordHasher
from application.principal import Principal
from domain.errors import InvalidCommand, WrongPassword
from domain.events import CommandContext
from domain.tenant import Tenant
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

    def create(
        self,
        principal: Principal,
        *,
        username: str,
        password: str,
        tenant_id: str | None,
        roles: tuple[str, ...],
        ctx: CommandContext,
    ) -> tuple[User, int | None]:
        authorize(principal, Permission.USERS_WRITE)
        if not principal.is_platform_admin:
            if tenant_id != principal.tenant_id:
                raise PermissionDenied("tenant admins may only create users in their own tenant")
            if PLATFORM_ADMIN in roles:
                raise PermissionDenied("only a platform admin may grant platform_admin")
        if tenant_id is not None:
            tenant = self._find_tenant(tenant_id)
            if tenant is None or tenant.status == "deleted":
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
        if self._store.find(User, user.id) is not None:
            raise InvalidCommand(f"username {username!r} is already taken", "username")
        return user, self._store.append(user)

    def load(self, principal: Principal, user_id: UUID) -> User:
        """A live user the principal administers: platform admins any, tenant admins
        their tenant's (another tenant's user is reported missing)."""
        user = self._store.load(User, user_id, "user")
        if user.deleted:
            raise NotFound("user", user_id)
        if not principal.is_platform_admin or principal.tenant_id is not None:
            if user.tenant_id is None or user.tenant_id != principal.tenant_id:
                raise NotFound("user", user_id)
        return user

    def update(
        self,
        principal: Principal,
        user_id: UUID,
        *,
        roles: tuple[str, ...] | None,
        active: bool | None,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[User, int | None]:
        authorize(principal, Permission.USERS_WRITE)
        user = self.load(principal, user_id)
        check_expected_version(user.version, expected_version)
        if str(user.id) == principal.subject_id and principal.kind == "user":
            # An admin who demotes or locks out itself may leave nobody to undo it.
            if (roles is not None and set(roles) != set(user.roles)) or active is False:
                raise InvalidCommand("you cannot change your own roles or deactivate yourself")
        if roles is not None:
            if PLATFORM_ADMIN in roles and not principal.is_platform_admin:
                raise PermissionDenied("only a platform admin may grant platform_admin")
            user.change_roles(tuple(roles), ctx)
        if active is not None:
            user.set_active(active, ctx)
        return user, self._store.append(user, precondition=expected_version is not None)

    def delete(
        self,
        principal: Principal,
        user_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[User, int | None]:
        authorize(principal, Permission.USERS_WRITE)
        user = self.load(principal, user_id)
        check_expected_version(user.version, expected_version)
        if str(user.id) == principal.subject_id and principal.kind == "user":
            raise InvalidCommand("you cannot delete yourself")
        user.delete(ctx)
        return user, self._store.append(user, precondition=expected_version is not None)

    def change_password(
        self,
        principal: Principal,
        user_id: UUID,
        *,
        current_password: str | None,
        new_password: str,
        ctx: CommandContext,
    ) -> tuple[User, int | None]:
        """Users change their own password by proving the current one; admins reset the
        passwords of users they administer. Either way every session of the user ends."""
        if principal.kind == "user" and principal.subject_id == str(user_id):
            user = self._store.load(User, user_id, "user")
            if current_password is None:
                raise InvalidCommand("current_password is required", "current_password")
            if not self._hasher.verify(user.password_hash, current_password):
                # Not AuthenticationFailed: the caller is authenticated, and a 401 would
                # make clients drop or refresh a token that is fine. A wrong answer in
                # the form is a validation error on that field.
                raise WrongPassword("the current password is wrong", "current_password")
        else:
            authorize(principal, Permission.USERS_WRITE)
            user = self.load(principal, user_id)
        check_password_policy(user.username, new_password)
        user.change_password(self._hasher.hash(new_password), ctx)
        return user, self._store.append(user)

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
