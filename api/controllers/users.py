"""/api/v1/users: people who log in, each in one tenant (or platform admins in none)."""

from __future__ import annotations

import asyncio

from litestar import Controller, Request, Response, post
from litestar.params import JSONBody

from api.auth import principal_of
from api.controllers.common import ContainerDep, command_context
from api.schemas.identity import UserCreate, UserWritten
from application.authorization import Permission


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @post("/", opt={"permission": Permission.USERS_WRITE}, summary="Create a user")
    async def create(
        self, data: JSONBody[UserCreate], request: Request, container: ContainerDep
    ) -> Response[UserWritten]:
        user, position = await asyncio.to_thread(
            lambda: container.identity.create_user(
                principal_of(request),
                username=data.username,
                password=data.password,
                tenant_id=data.tenant_id,
                roles=tuple(data.roles),
                ctx=command_context(request),
            )
        )
        body = UserWritten(
            id=str(user.id),
            username=user.username,
            tenant_id=user.tenant_id,
            roles=list(user.roles),
            version=user.version,
            position=position,
        )
        return Response(body, status_code=201)  # Location once GET /users/{id} exists
