"""The Webhook aggregate (domain/webhook.py): given its events, a command records the
events it must, nothing when it changes nothing, or is refused naming the field and
records nothing. No event carries a secret."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext
from domain.webhook import Webhook, check_secret

CTX = CommandContext("user:u1", "corr-1")
URL = "https://hooks.example.com/norn"


def webhook(**fields: Any) -> Webhook:
    """A webhook whose creation is already saved (no pending events)."""
    fields = {"url": URL, "events": ("norn.run.*",), **fields}
    made = Webhook.create(
        webhook_id=uuid4(), tenant_id="t1", secret_generated=True, ctx=CTX, **fields
    )
    made.collect_events()
    return made


def recorded(aggregate: Webhook) -> list[str]:
    return [type(event).__name__ for event in aggregate.collect_events()]


def test_a_created_webhook_holds_its_subscription_and_no_secret() -> None:
    made = Webhook.create(
        webhook_id=uuid4(),
        tenant_id="t1",
        url=URL,
        events=("norn.run.*", "norn.deployment.release_*"),
        description="ops",
        secret_generated=False,
        ctx=CTX,
    )
    [created] = made.collect_events()
    assert type(created).__name__ == "WebhookCreated"
    assert (created.actor, created.tenant_id, created.url) == ("user:u1", "t1", URL)
    assert (made.active, made.deleted, made.disabled_reason) == (True, False, None)
    assert not any("secret" in name and name != "secret_generated" for name in vars(created))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": ""}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "https:///no-host"}, "url"),
        ({"url": "https://example.com:99999/x"}, "url"),
        ({"url": " https://example.com/x"}, "url"),
        ({"url": "https://example.com/a b"}, "url"),
        ({"url": "https://example.com/" + "x" * 2100}, "url"),
        ({"url": "https://example.com/\x00"}, "url"),
        ({"events": ()}, "events"),
        ({"events": ("norn.[run",)}, "events[0]"),
        ({"events": ("norn.run.*", "has space")}, "events[1]"),
        ({"events": ("x",) * 51}, "events"),
        ({"events": ("a\x00",)}, "events[0]"),
        ({"description": "d" * 1001}, "description"),
    ],
)
def test_invalid_subscriptions_are_refused_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidCommand) as refused:
        webhook(**fields)
    assert refused.value.field == field


@pytest.mark.parametrize("secret", ["short", "x" * 257, "tab\tinside-the-secret"])
def test_a_given_secret_must_be_long_and_printable(secret: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        check_secret(secret)
    assert refused.value.field == "secret"


def test_an_update_records_the_new_fields_and_nothing_when_they_are_the_same() -> None:
    made = webhook()
    assert made.update(CTX, events=("norn.*",)) is True
    assert recorded(made) == ["WebhookUpdated"]
    assert (made.url, made.events) == (URL, ("norn.*",))
    assert made.update(CTX, url=URL, events=("norn.*",)) is False
    assert recorded(made) == []
    with pytest.raises(InvalidCommand):
        made.update(CTX, url="gopher://x")
    assert recorded(made) == []


def test_activation_toggles_once_and_norn_disables_only_an_active_webhook() -> None:
    made = webhook()
    assert made.activate(CTX) is False
    assert made.disable(CTX, "20 consecutive failed deliveries") is True
    assert recorded(made) == ["WebhookDisabled"]
    assert (made.active, made.disabled_reason) == (False, "20 consecutive failed deliveries")
    # A second notifier noticing the same failures records nothing.
    assert made.disable(CTX, "20 consecutive failed deliveries") is False
    assert made.activate(CTX) is True
    assert (made.active, made.disabled_reason) == (True, None)
    assert made.deactivate(CTX) is True
    assert made.disable(CTX, "again") is False  # a user stopped it: Norn has nothing to stop
    assert recorded(made) == ["WebhookActivated", "WebhookDeactivated"]


def test_a_deleted_webhook_refuses_every_command() -> None:
    made = webhook()
    made.delete(CTX)
    assert recorded(made) == ["WebhookDeleted"]
    for command in (
        lambda: made.update(CTX, description="x"),
        lambda: made.activate(CTX),
        lambda: made.deactivate(CTX),
        lambda: made.disable(CTX, "x"),
        lambda: made.rotate_secret(CTX, generated=True),
        lambda: made.delete(CTX),
    ):
        with pytest.raises(AggregateDeleted):
            command()
    assert recorded(made) == []


def test_a_rotated_secret_is_recorded_without_the_secret() -> None:
    made = webhook()
    made.rotate_secret(CTX, generated=False)
    [rotated] = made.collect_events()
    assert type(rotated).__name__ == "WebhookSecretRotated"
    assert rotated.secret_generated is False  # type: ignore[attr-defined]
    assert "secret" not in {k for k in vars(rotated) if k != "secret_generated"}


def test_event_type_names() -> None:
    from domain.webhook import WebhookCreated, WebhookDisabled

    assert WebhookCreated.type_name() == "norn.webhook.created.v1"
    assert WebhookDisabled.type_name() == "norn.webhook.disabled.v1"
