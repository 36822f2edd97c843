"""Webhook use cases on the in-memory store (application/webhooks.py): the secret goes
to the secret store before the webhook's event and into no event; the SSRF guard and
the field rules refuse naming the field; another tenant's webhook is NotFound; the
notifier's disable is recorded once, by the system."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.errors import NotFound
from application.webhooks import WebhookService
from domain.errors import InvalidCommand
from domain.webhook import Webhook
from tests.support.deployments import CTX, World

URL = "https://hooks.example.com/norn"


class Secrets:
    def __init__(self) -> None:
        self.kept: dict[UUID, str] = {}

    def put(self, webhook_id: UUID, tenant_id: str, secret: str) -> None:
        self.kept[webhook_id] = secret

    def get(self, webhook_id: UUID) -> str | None:
        return self.kept.get(webhook_id)


class Outbox:
    def __init__(self) -> None:
        self.pings: list[UUID] = []
        self.known: set[UUID] = set()

    def ping(self, webhook_id: UUID, tenant_id: str) -> UUID:
        self.pings.append(webhook_id)
        return uuid4()

    def redeliver(self, webhook_id: UUID, delivery_id: UUID) -> bool:
        return delivery_id in self.known


class Hooks(World):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.secrets, self.outbox = Secrets(), Outbox()
        self.refused_hosts: set[str] = {"internal.example"}
        self.webhooks = WebhookService(self.store, self.secrets, self._problem, self.outbox)

    def _problem(self, url: str) -> str | None:
        return "private" if any(host in url for host in self.refused_hosts) else None

    def stored_states(self) -> bytes:
        notes = self.store.recorder.select_notifications(start=1, limit=10_000)
        return b"\n".join(note.state for note in notes)


@pytest.fixture
def world(tmp_path: Path) -> Hooks:
    return Hooks(tmp_path)


def create(world: Hooks, **fields: Any) -> Any:
    fields = {"url": URL, "events": ("norn.run.*",), **fields}
    return world.webhooks.create(fields.pop("principal", world.admin), CTX, **fields)


def test_a_generated_secret_is_answered_once_and_kept_only_in_the_secret_store(
    world: Hooks,
) -> None:
    made = create(world)
    assert len(made.secret) >= 40
    assert world.secrets.kept[made.state.id] == made.secret
    assert made.secret.encode() not in world.stored_states()
    given = create(world, secret="my-own-secret-of-20-chars")
    assert given.secret == "my-own-secret-of-20-chars"
    assert b"my-own-secret-of-20-chars" not in world.stored_states()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "https://internal.example/x"}, "url"),
        ({"url": "mailto:x@example.com"}, "url"),
        ({"secret": "too-short"}, "secret"),
        ({"events": ()}, "events"),
    ],
)
def test_refusals_name_the_field_and_store_nothing(
    world: Hooks, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidCommand) as refused:
        create(world, **fields)
    assert refused.value.field == field
    assert world.secrets.kept == {}


def test_a_new_url_passes_the_guard_too(world: Hooks) -> None:
    made = create(world).state
    with pytest.raises(InvalidCommand) as refused:
        world.webhooks.update(world.admin, made.id, CTX, url="https://internal.example/y")
    assert refused.value.field == "url"
    changed = world.webhooks.update(world.admin, made.id, CTX, active=False, description="d")
    assert (changed.state.active, changed.state.description) == (False, "d")


def test_another_tenants_webhook_is_not_found(world: Hooks) -> None:
    made = create(world).state
    stranger = replace(world.admin, tenant_id=str(uuid4()), tenant=None)
    for command in (
        lambda: world.webhooks.load(stranger, made.id),
        lambda: world.webhooks.ping(stranger, made.id),
        lambda: world.webhooks.redeliver(stranger, made.id, uuid4()),
    ):
        with pytest.raises(NotFound):
            command()
    assert world.outbox.pings == []


def test_ping_and_redeliver_reach_the_outbox_of_a_visible_webhook(world: Hooks) -> None:
    made = create(world).state
    world.webhooks.ping(world.admin, made.id)
    assert world.outbox.pings == [made.id]
    with pytest.raises(NotFound):
        world.webhooks.redeliver(world.admin, made.id, uuid4())
    known = uuid4()
    world.outbox.known.add(known)
    world.webhooks.redeliver(world.admin, made.id, known)
    world.webhooks.delete(world.admin, made.id, CTX)
    with pytest.raises(NotFound):
        world.webhooks.ping(world.admin, made.id)


def test_the_notifier_disables_once_as_the_system(world: Hooks) -> None:
    made = create(world).state
    first = world.webhooks.disable(made.id, "20 consecutive failed deliveries")
    assert first is not None and first.position is not None
    again = world.webhooks.disable(made.id, "20 consecutive failed deliveries")
    assert again is not None and again.position is None
    loaded = world.store.load(Webhook, made.id, "webhook")
    assert (loaded.active, loaded.disabled_reason) == (False, "20 consecutive failed deliveries")
    notes = world.store.recorder.select_notifications(start=1, limit=10_000)
    assert b"system:notifier" in notes[-1].state and b"WebhookDisabled" in notes[-1].topic.encode()
    assert world.webhooks.disable(uuid4(), "gone") is None
