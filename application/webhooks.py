"""Webhook use cases (README "Webhooks"): create, update, delete, ping, redeliver, and
the notifier's disable after repeated failures. Delivering is the notifier's
(infrastructure/notifier_role.py).

The signing secret is written (encrypted) to the secret store first, keyed by the
webhook's id, then the webhook's events are appended: a create that fails after the
first step leaves a secret nobody can reach (no webhook has that id), never a webhook
without its secret. The secret is in no event and in no read response; a create
answers it once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from application.authorization import sees
from application.commands import Aggregates
from application.errors import NotFound
from application.event_store import NornEventStore
from application.idempotency import new_id
from application.principal import Principal, system_principal
from application.results import Changed
from application.tenants import writable_tenant
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.webhook import Webhook, check_definition, check_secret

SECRET_BYTES = 32


class WebhookSecrets(Protocol):
    """Where signing secrets are kept, encrypted (infrastructure/webhook_secrets.py)."""

    def put(self, webhook_id: UUID, tenant_id: str, secret: str) -> None: ...

    def get(self, webhook_id: UUID) -> str | None: ...


class WebhookOutbox(Protocol):
    """The notifier's deliveries, as the API may touch them
    (infrastructure/webhook_deliveries.py)."""

    def ping(self, webhook_id: UUID, tenant_id: str) -> UUID: ...

    def redeliver(self, webhook_id: UUID, delivery_id: UUID) -> bool: ...


UrlProblem = Callable[[str], str | None]
"""Why a URL may not be delivered to (the SSRF guard: it resolves to a private address),
or None."""


@dataclass(frozen=True, kw_only=True)
class CreatedWebhook(Changed[Webhook]):
    secret: str
    """The signing secret: answered to the creator once, kept only encrypted."""


class WebhookService:
    def __init__(
        self,
        store: NornEventStore,
        secrets_: WebhookSecrets,
        url_problem: UrlProblem,
        outbox: WebhookOutbox,
    ) -> None:
        self._store = store
        self._secrets = secrets_
        self._url_problem = url_problem
        self._outbox = outbox
        self._webhooks = Aggregates(
            store,
            Webhook,
            "webhook",
            scope=lambda principal, webhook: sees(principal, webhook.tenant_id),
            gone=lambda webhook: webhook.deleted,
        )

    def load(self, principal: Principal, webhook_id: UUID) -> Webhook:
        return self._webhooks.load(principal, webhook_id)

    def create(
        self,
        principal: Principal,
        ctx: CommandContext,
        *,
        url: str,
        events: tuple[str, ...],
        secret: str | None = None,
        description: str = "",
        active: bool = True,
    ) -> CreatedWebhook:
        tenant = writable_tenant(self._store, principal)
        check_definition(url, events, description)
        if secret is not None:
            check_secret(secret)
        self._check_reachable(url)
        webhook = Webhook.create(
            webhook_id=new_id(ctx, "webhook"),
            tenant_id=tenant.tenant_id,
            url=url,
            events=events,
            description=description,
            active=active,
            secret_generated=secret is None,
            ctx=ctx,
        )
        signing = secret if secret is not None else secrets.token_urlsafe(SECRET_BYTES)
        self._secrets.put(webhook.id, tenant.tenant_id, signing)
        saved = self._webhooks.save(webhook)
        return CreatedWebhook(saved.state, saved.version, saved.position, secret=signing)

    def update(
        self,
        principal: Principal,
        webhook_id: UUID,
        ctx: CommandContext,
        *,
        url: str | None = None,
        events: tuple[str, ...] | None = None,
        description: str | None = None,
        active: bool | None = None,
        expected_version: int | None = None,
    ) -> Changed[Webhook]:
        """Change the fields named; `active` activates or deactivates (re-activating a
        webhook Norn disabled resumes its deliveries and clears the reason)."""
        writable_tenant(self._store, principal)

        def decide(webhook: Webhook) -> None:
            if url is not None and url != webhook.url:
                check_definition(url, webhook.events, webhook.description)
                self._check_reachable(url)
            webhook.update(ctx, url=url, events=events, description=description)
            if active is True:
                webhook.activate(ctx)
            elif active is False:
                webhook.deactivate(ctx)

        return self._webhooks.change(principal, webhook_id, decide, expected_version, ctx)

    def delete(
        self,
        principal: Principal,
        webhook_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Webhook]:
        """Soft: its history stays in the store; its pending deliveries are dropped."""
        writable_tenant(self._store, principal)

        def decide(webhook: Webhook) -> None:
            webhook.delete(ctx)

        return self._webhooks.change(principal, webhook_id, decide, expected_version, ctx)

    def rotate_secret(
        self,
        principal: Principal,
        webhook_id: UUID,
        ctx: CommandContext,
        secret: str | None = None,
        expected_version: int | None = None,
    ) -> CreatedWebhook:
        """A new signing secret (`secret`, or one Norn makes), answered once; deliveries
        attempted from then on are signed with it. The event first, then the secret: a
        failure in between leaves the old secret signing (the caller sees an error and
        rotates again), never a secret that nobody was shown."""
        writable_tenant(self._store, principal)
        if secret is not None:
            check_secret(secret)
        signing = secret if secret is not None else secrets.token_urlsafe(SECRET_BYTES)

        def decide(webhook: Webhook) -> None:
            webhook.rotate_secret(ctx, generated=secret is None)

        saved = self._webhooks.change(principal, webhook_id, decide, expected_version, ctx)
        self._secrets.put(saved.state.id, saved.state.tenant_id, signing)
        return CreatedWebhook(saved.state, saved.version, saved.position, secret=signing)

    def ping(self, principal: Principal, webhook_id: UUID) -> UUID:
        """Queue a `norn.webhook.ping` delivery (also to an inactive webhook, to test it
        before activating it again): its delivery id."""
        writable_tenant(self._store, principal)
        webhook = self.load(principal, webhook_id)
        return self._outbox.ping(webhook.id, webhook.tenant_id)

    def redeliver(self, principal: Principal, webhook_id: UUID, delivery_id: UUID) -> None:
        """A new attempt of a delivery, with its delivery id (receivers deduplicate)."""
        writable_tenant(self._store, principal)
        webhook = self.load(principal, webhook_id)
        if not self._outbox.redeliver(webhook.id, delivery_id):
            raise NotFound("delivery", delivery_id)

    def disable(self, webhook_id: UUID, reason: str) -> Changed[Webhook] | None:
        """Norn stops a webhook whose deliveries keep failing (the notifier asks): None
        when it is gone already."""
        principal = system_principal("notifier")
        ctx = CommandContext(principal.actor, f"notifier:{webhook_id}")

        def decide(webhook: Webhook) -> None:
            webhook.disable(ctx, reason)

        try:
            return self._webhooks.change(principal, webhook_id, decide, ctx=ctx)
        except NotFound:
            return None

    def _check_reachable(self, url: str) -> None:
        problem = self._url_problem(url)
        if problem is not None:
            raise InvalidCommand(problem, "url")
