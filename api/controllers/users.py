"""/api/v1/users: people who log in, each in one tenant (or platform admins in none).
Tenant admins manage their tenant's users; platform admins any. Anybody changes their
own password."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import principal_of
from api.controllers.common import (
    IfMatch,
    MinPosition,
    command_context,
    created,
    etag,
    expected_version,
)
from api.controllers.paging import paged, query_error
from api.dependencies import (
    LoginServiceDep,
    PagingDep,
    ReadYourWritesDep,
    UserQueriesDep,
    UserServiceDep,
)
from api.schemas.users import (
    PasswordChange,
    Role,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
    UserWritten,
)
from application.authorization import Permission, is_self
from application.errors import NotFound
from application.results import Changed
from domain.user import User

READ = {"permission": Permission.USERS_READ}
WRITE = {"permission": Permission.USERS_WRITE}


def _written(result: Changed[User]) -> UserWritten:
    user = result.state
    return UserWritten(
        id=str(user.id),
        username=user.username,
        tenant_id=user.tenant_id,
        roles=list(user.roles),
        active=user.active,
        created_at=user.created_on,
        updated_at=user.modified_on,
        version=result.version,
        position=result.position,
    )


def _read(row: dict[str, Any]) -> UserRead:
    return UserRead(
        id=row["id"],
        username=row["username"],
        tenant_id=row["tenant_id"],
        roles=row["roles"],
        active=row["active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @post("/", opt=WRITE, summary="Create a user")
    async def create(
        self, data: JSONBody[UserCreate], request: Request, users: UserServiceDep
    ) -> Response[UserWritten]:
        principal = principal_of(request)
        result = await users.create(
            principal,
            username=data.username,
            password=data.password,
            tenant_id=principal.tenant_id if data.tenant_id is msgspec.UNSET else data.tenant_id,
            roles=tuple(data.roles),
            ctx=command_context(request),
        )
        return created(_written(result), f"{self.path}/{result.state.id}")

    @get("/", opt=READ, summary="List users (your tenant's; platform admins: every tenant's)")
    async def list_users(
        self,
        request: Request,
        user_queries: UserQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        role: FromQuery[Role | None] = None,
        active: FromQuery[bool | None] = None,
        min_position: MinPosition = None,
    ) -> Response[UserPage]:
        await read_your_writes("users", min_position)
        try:
            result = await user_queries.list(
                principal_of(request).tenant_id,
                role=role,
                active=active,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [_read(r) for r in result.items]
        body = UserPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{user_id:uuid}", opt=READ, summary="Get a user (ETag = version)")
    async def get_user(
        self,
        user_id: FromPath[UUID],
        request: Request,
        user_queries: UserQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[UserRead]:
        await read_your_writes("users", min_position)
        row = await user_queries.get(principal_of(request).tenant_id, user_id)
        if row is None:
            raise NotFound("user", user_id)
        return Response(_read(row), headers={"ETag": etag(row["version"])})

    @put("/{user_id:uuid}", opt=WRITE, summary="Change a user's roles or activation")
    async def update(
        self,
        user_id: FromPath[UUID],
        data: JSONBody[UserUpdate],
        request: Request,
        users: UserServiceDep,
        if_match: IfMatch = None,
    ) -> Response[UserWritten]:
        result = await users.update(
            principal_of(request),
            user_id,
            roles=None if data.roles is None else tuple(data.roles),
            active=data.active,
            ctx=command_context(request),
            expected_version=expected_version(if_match),
        )
        return Response(_written(result), headers={"ETag": etag(result.version)})

    @delete(
        "/{user_id:uuid}",
        opt=WRITE,
        status_code=200,
        summary="Delete a user (soft: sessions end, the username stays reserved)",
    )
    async def delete_user(
        self,
        user_id: FromPath[UUID],
        request: Request,
        users: UserServiceDep,
        if_match: IfMatch = None,
    ) -> UserWritten:
        result = await users.delete(
            principal_of(request), user_id, command_context(request), expected_version(if_match)
        )
        return _written(result)

    @post(
        "/{user_id:uuid}/password",
        opt={"permission": "authenticated"},
        status_code=200,
        summary="Change a password (your own with the current one, or as an admin)",
        description=(
            "Your own password: send current_password; a missing or wrong one is 422"
            " VALIDATION_ERROR on that field (your token stays valid). Admins reset the"
            " passwords of users they manage without it. Either way every session of the"
            " user ends, the caller's own included: log in again with the new password."
        ),
    )
    async def change_password(
        self,
        user_id: FromPath[UUID],
        data: JSONBody[PasswordChange],
        request: Request,
        users: UserServiceDep,
        logins: LoginServiceDep,
    ) -> UserWritten:
        principal = principal_of(request)

        def change() -> Awaitable[Changed[User]]:
            return users.change_password(
                principal,
                user_id,
                current_password=data.current_password,
                new_password=data.new_password,
                ctx=command_context(request),
            )

        if not is_self(principal, str(user_id)):
            return _written(await change())
        # Proving the current password is a login attempt: throttle it as one, so a stolen
        # token cannot be used to guess the password.
        address = request.client.host if request.client else "unknown"
        return _written(await logins.throttled(principal.name, address, change))
