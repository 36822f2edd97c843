"""/api/v1/webhooks: tenant admins' webhook subscriptions (README "Webhooks"). Commands
go through WebhookService (application/webhooks.py); reads come from the `webhooks` read
model and the notifier's deliveries (projections/webhook_queries.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import principal_of
from api.controllers.common import IfMatch, MinPosition, command_context, etag, expected_version
from api.controllers.paging import paged, query_error
from api.dependencies import PagingDep, ReadYourWritesDep, WebhookQueriesDep, WebhookServiceDep
from api.schemas.webhooks import (
    DeliveryPage,
    DeliveryQueued,
    DeliveryRead,
    SecretRotation,
    WebhookCreate,
    WebhookCreated,
    WebhookDeletedOut,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
    WebhookWritten,
)
from application.authorization import Permission
from application.errors import NotFound
from application.results import Changed
from application.webhooks import CreatedWebhook
from domain.webhook import Webhook

READ = {"permission": Permission.WEBHOOKS_READ}
WRITE = {"permission": Permission.WEBHOOKS_WRITE}
# The answer holds the secret: a kept idempotent response would store it (as API keys).
CREATE = {"permission": Permission.WEBHOOKS_WRITE, "idempotency": "refuse"}


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]

    @post("/", opt=CREATE, summary="Create a webhook (its secret is shown once)")
    async def create(
        self, data: JSONBody[WebhookCreate], request: Request, webhooks: WebhookServiceDep
    ) -> Response[WebhookCreated]:
        result = await webhooks.create(
            principal_of(request),
            command_context(request),
            url=data.url,
            events=tuple(data.events),
            secret=data.secret,
            description=data.description,
            active=data.active,
        )
        headers = {"Location": f"{self.path}/{result.state.id}", "Cache-Control": "no-store"}
        return Response(_created(result), status_code=201, headers=headers)

    @get("/", opt=READ, summary="List webhooks (cursor pagination)")
    async def list_webhooks(
        self,
        request: Request,
        webhook_queries: WebhookQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        active: FromQuery[bool | None] = None,
        min_position: MinPosition = None,
    ) -> Response[WebhookPage]:
        await read_your_writes("webhooks", min_position)
        try:
            result = await webhook_queries.list(
                principal_of(request).tenant_id,
                active=active,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [_from_row(r) for r in result.items]
        body = WebhookPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{webhook_id:uuid}", opt=READ, summary="Get a webhook (ETag = version)")
    async def get_webhook(
        self,
        webhook_id: FromPath[UUID],
        request: Request,
        webhook_queries: WebhookQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[WebhookRead]:
        await read_your_writes("webhooks", min_position)
        row = await _visible(webhook_queries, request, webhook_id)
        return Response(_from_row(row), headers={"ETag": etag(row["version"])})

    @patch("/{webhook_id:uuid}", opt=WRITE, summary="Change a webhook (If-Match optional)")
    async def update(
        self,
        webhook_id: FromPath[UUID],
        data: JSONBody[WebhookUpdate],
        request: Request,
        webhooks: WebhookServiceDep,
        if_match: IfMatch = None,
    ) -> Response[WebhookWritten]:
        result = await webhooks.update(
            principal_of(request),
            webhook_id,
            command_context(request),
            url=data.url,
            events=None if data.events is None else tuple(data.events),
            description=data.description,
            active=data.active,
            expected_version=expected_version(if_match),
        )
        return Response(_written(result), headers={"ETag": etag(result.version)})

    @delete("/{webhook_id:uuid}", opt=WRITE, status_code=200, summary="Delete a webhook")
    async def delete_webhook(
        self,
        webhook_id: FromPath[UUID],
        request: Request,
        webhooks: WebhookServiceDep,
        if_match: IfMatch = None,
    ) -> WebhookDeletedOut:
        result = await webhooks.delete(
            principal_of(request), webhook_id, command_context(request), expected_version(if_match)
        )
        return WebhookDeletedOut(str(webhook_id), True, result.version, result.position)

    @get("/{webhook_id:uuid}/deliveries", opt=READ, summary="A webhook's deliveries, newest first")
    async def deliveries(
        self,
        webhook_id: FromPath[UUID],
        request: Request,
        webhook_queries: WebhookQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        status: FromQuery[str | None] = None,
        min_position: MinPosition = None,
    ) -> Response[DeliveryPage]:
        await read_your_writes("webhooks", min_position)
        await _visible(webhook_queries, request, webhook_id)
        try:
            result = await webhook_queries.deliveries(
                webhook_id,
                status=status,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [_delivery(r) for r in result.items]
        body = DeliveryPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/redeliver",
        opt=WRITE,
        status_code=202,
        summary="Attempt a delivery again, with its delivery id",
    )
    async def redeliver(
        self,
        webhook_id: FromPath[UUID],
        delivery_id: FromPath[UUID],
        request: Request,
        webhooks: WebhookServiceDep,
    ) -> DeliveryQueued:
        await webhooks.redeliver(principal_of(request), webhook_id, delivery_id)
        return DeliveryQueued(
            webhook_id=str(webhook_id), delivery_id=str(delivery_id), status="pending"
        )

    @post(
        "/{webhook_id:uuid}/ping",
        opt=WRITE,
        status_code=202,
        summary="Send a norn.webhook.ping delivery",
    )
    async def ping(
        self, webhook_id: FromPath[UUID], request: Request, webhooks: WebhookServiceDep
    ) -> DeliveryQueued:
        delivery = await webhooks.ping(principal_of(request), webhook_id)
        return DeliveryQueued(
            webhook_id=str(webhook_id), delivery_id=str(delivery), status="pending"
        )

    @post(
        "/{webhook_id:uuid}/rotate-secret",
        opt=CREATE,
        status_code=200,
        summary="A new signing secret, shown this once (POST /webhooks/{id}:rotate-secret)",
    )
    async def rotate_secret(
        self,
        webhook_id: FromPath[UUID],
        request: Request,
        webhooks: WebhookServiceDep,
        data: JSONBody[SecretRotation | None] = None,
        if_match: IfMatch = None,
    ) -> Response[WebhookCreated]:
        result = await webhooks.rotate_secret(
            principal_of(request),
            webhook_id,
            command_context(request),
            data.secret if data is not None else None,
            expected_version(if_match),
        )
        return Response(_created(result), headers={"Cache-Control": "no-store"})


async def _visible(queries: Any, request: Request, webhook_id: UUID) -> dict[str, Any]:
    row = await queries.get(principal_of(request).tenant_id, webhook_id)
    if row is None or row["deleted"]:
        raise NotFound("webhook", webhook_id)
    return row


def _from_row(row: dict[str, Any]) -> WebhookRead:
    return WebhookRead(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        events=list(row["events"]),
        description=row["description"],
        active=row["active"],
        disabled_reason=row["disabled_reason"],
        version=row["version"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _fields(result: Changed[Webhook]) -> dict[str, Any]:
    w = result.state
    return {
        "id": str(w.id),
        "tenant_id": w.tenant_id,
        "url": w.url,
        "events": list(w.events),
        "description": w.description,
        "active": w.active,
        "disabled_reason": w.disabled_reason,
        "version": result.version,
        "position": result.position,
        "changed": result.changed,
    }


def _written(result: Changed[Webhook]) -> WebhookWritten:
    return WebhookWritten(**_fields(result))


def _created(result: CreatedWebhook) -> WebhookCreated:
    return WebhookCreated(**_fields(result), secret=result.secret)


def _delivery(row: dict[str, Any]) -> DeliveryRead:
    pending = row["status"] in ("pending", "failed")
    return DeliveryRead(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        event_time=row["event_time"],
        position=row["position"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if pending else None,
        first_attempt_at=row["first_attempt_at"],
        last_attempt_at=row["last_attempt_at"],
        response_code=row["last_status_code"],
        response_ms=row["last_duration_ms"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
    )
