"""The Webhook aggregate: a tenant's subscription of an HTTP endpoint to its events
(README "Webhooks").

Its stream holds what users decide (created, updated, activated, deactivated, deleted)
and one thing Norn decides: `WebhookDisabled`, when deliveries to it kept failing.
What the notifier does with it (deliveries, attempts) is kept out of the stream, in the
notifier's tables, so that delivering does not grow it.

The signing secret is never in an event: it signs, so it cannot be hashed, and it is
kept encrypted outside the store (infrastructure/webhook_secrets.py). The events carry
only whether one was generated.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.text import nul_errors

URL_MAX = 2_048
DESCRIPTION_MAX = 1_000
MAX_GLOBS = 50
GLOB_MAX = 200
SECRET_MIN = 16
SECRET_MAX = 256
# Event types are norn.<aggregate>.<event>.v<n>: a glob uses their characters and
# fnmatch's wildcards (* ? [seq] [!seq]), nothing else.
_GLOB = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]+$")


def check_url(url: str) -> None:
    """An absolute http(s) URL with a host; where it points is the SSRF guard's to judge
    (infrastructure/plugins/network.py), at creation and at each delivery."""
    if not url or len(url) > URL_MAX or url != url.strip():
        raise InvalidCommand(f"a URL of 1 to {URL_MAX} characters, without spaces", "url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as error:
        raise InvalidCommand(f"not a URL: {error}", "url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidCommand("an absolute http:// or https:// URL with a host", "url")
    if any(ch.isspace() for ch in url):
        raise InvalidCommand("a URL without whitespace", "url")


def check_globs(globs: tuple[str, ...]) -> None:
    if not globs:
        raise InvalidCommand("name at least one event type or glob, e.g. norn.run.*", "events")
    if len(globs) > MAX_GLOBS:
        raise InvalidCommand(f"at most {MAX_GLOBS} globs", "events")
    for i, glob in enumerate(globs):
        if not 1 <= len(glob) <= GLOB_MAX or not _GLOB.match(glob) or not _balanced(glob):
            raise InvalidCommand(
                "a glob of event types (letters, digits, _ . - and * ? [...])", f"events[{i}]"
            )


def _balanced(glob: str) -> bool:
    """fnmatch reads an unclosed '[' as a literal: refused, as it is surely a typo."""
    depth = 0
    for ch in glob:
        if ch == "[":
            if depth:
                return False
            depth = 1
        elif ch == "]" and depth:
            depth = 0
    return depth == 0


def check_definition(url: str, events: tuple[str, ...], description: str) -> None:
    for problem in nul_errors({"url": url, "events": list(events), "description": description}, ""):
        raise InvalidCommand(problem.message, problem.field)
    check_url(url)
    check_globs(events)
    if len(description) > DESCRIPTION_MAX:
        raise InvalidCommand(f"at most {DESCRIPTION_MAX} characters", "description")


def check_secret(secret: str) -> None:
    """A secret given by the caller: long enough not to be guessed, and printable."""
    if not SECRET_MIN <= len(secret) <= SECRET_MAX or not secret.isprintable():
        raise InvalidCommand(
            f"a secret of {SECRET_MIN} to {SECRET_MAX} printable characters", "secret"
        )


class WebhookEvent(NornEvent):
    aggregate_type = "webhook"


class WebhookCreated(WebhookEvent, NornCreated):
    url: str
    events: tuple[str, ...]
    description: str
    active: bool
    secret_generated: bool
    """Whether Norn made the secret (it was shown once) or the caller gave it."""


class WebhookUpdated(WebhookEvent):
    url: str
    events: tuple[str, ...]
    description: str

    def apply(self, aggregate: Webhook) -> None:
        aggregate.url, aggregate.events = self.url, tuple(self.events)
        aggregate.description = self.description


class WebhookActivated(WebhookEvent):
    def apply(self, aggregate: Webhook) -> None:
        aggregate.active = True
        aggregate.disabled_reason = None


class WebhookDeactivated(WebhookEvent):
    """A user stopped deliveries."""

    def apply(self, aggregate: Webhook) -> None:
        aggregate.active = False


class WebhookDisabled(WebhookEvent):
    """Norn stopped deliveries (e.g. after 20 consecutive failures)."""

    reason: str

    def apply(self, aggregate: Webhook) -> None:
        aggregate.active = False
        aggregate.disabled_reason = self.reason


class WebhookSecretRotated(WebhookEvent):
    """A new signing secret (kept encrypted outside the store, never in this event)."""

    secret_generated: bool


class WebhookDeleted(WebhookEvent):
    def apply(self, aggregate: Webhook) -> None:
        aggregate.deleted = True


class Webhook(Aggregate):
    def __init__(
        self,
        tenant_id: str,
        url: str,
        events: tuple[str, ...],
        description: str,
        active: bool,
        secret_generated: bool,
    ) -> None:
        self.tenant_id = tenant_id
        self.url = url
        self.events = tuple(events)
        self.description = description
        self.active = active
        self.disabled_reason: str | None = None
        self.deleted = False

    @classmethod
    def create(
        cls,
        *,
        webhook_id: Any,
        tenant_id: str,
        url: str,
        events: tuple[str, ...],
        description: str = "",
        active: bool = True,
        secret_generated: bool,
        ctx: CommandContext,
    ) -> Webhook:
        check_definition(url, events, description)
        return cls._create(
            WebhookCreated,
            id=webhook_id,
            tenant_id=tenant_id,
            url=url,
            events=tuple(events),
            description=description,
            active=active,
            secret_generated=secret_generated,
            **ctx.event_fields(),
        )

    def update(
        self,
        ctx: CommandContext,
        *,
        url: str | None = None,
        events: tuple[str, ...] | None = None,
        description: str | None = None,
    ) -> bool:
        """Change the fields named (None: unchanged); False when nothing changes."""
        self._require_live()
        new = (
            self.url if url is None else url,
            self.events if events is None else tuple(events),
            self.description if description is None else description,
        )
        check_definition(*new)
        if new == (self.url, self.events, self.description):
            return False
        self._trigger(WebhookUpdated, ctx, url=new[0], events=new[1], description=new[2])
        return True

    def activate(self, ctx: CommandContext) -> bool:
        self._require_live()
        if self.active:
            return False
        self._trigger(WebhookActivated, ctx)
        return True

    def deactivate(self, ctx: CommandContext) -> bool:
        self._require_live()
        if not self.active:
            return False
        self._trigger(WebhookDeactivated, ctx)
        return True

    def disable(self, ctx: CommandContext, reason: str) -> bool:
        """Norn's stop: only an active webhook is disabled (one already stopped, by a
        user or by an earlier disable, records nothing), so two notifiers noticing the
        same failures record one event."""
        self._require_live()
        if not self.active:
            return False
        self._trigger(WebhookDisabled, ctx, reason=reason)
        return True

    def rotate_secret(self, ctx: CommandContext, *, generated: bool) -> None:
        self._require_live()
        self._trigger(WebhookSecretRotated, ctx, secret_generated=generated)

    def delete(self, ctx: CommandContext) -> None:
        self._require_live()
        self._trigger(WebhookDeleted, ctx)

    def _require_live(self) -> None:
        if self.deleted:
            raise AggregateDeleted(f"webhook {self.id} was deleted")

    def _trigger(self, event_class: type[WebhookEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
