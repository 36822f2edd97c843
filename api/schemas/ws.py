"""Messages of the WebSocket feed (GET /api/v1/ws, api/controllers/ws.py; README "WebSocket
feed"): what a client sends, each a JSON object told apart by its `type`, read into one
of the structs below or into a `Refusal` in the API's error terms (code, message and
details naming the field), and the frames the server sends back."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from infrastructure import envelope
from infrastructure.envelope import CloudEvent

MAX_MESSAGE_CHARS = 65_536
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | int
Names = list[Annotated[str, msgspec.Meta(max_length=500)]] | str
"""A list, or one comma-separated string as in the SSE feed's query."""


class _Message(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", kw_only=True):
    """An unknown field is refused, as in every request body (api/schemas/common.py)."""


class Auth(_Message, tag="auth"):
    """The credentials, as the first message (when the handshake carried none)."""

    token: str | None = None
    api_key: str | None = None
    id: MessageId | None = None


class Subscribe(_Message, tag="subscribe"):
    id: MessageId
    types: Names | None = None
    resources: Names | None = None
    actor: str | None = None
    after: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Unsubscribe(_Message, tag="unsubscribe"):
    id: MessageId


class Ping(_Message, tag="ping"):
    id: MessageId | None = None


ClientMessage = Auth | Subscribe | Unsubscribe | Ping


class Refusal(Exception):
    """A message answered with `{"type": "error", ...}`; the connection goes on."""

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        id: Any = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.id = code, message, field, id
        self.extra = extra

    def frame(self) -> str:
        details = [{"field": self.field, "message": self.message, **self.extra}]
        body: dict[str, Any] = {"type": "error"}
        if self.id is not None:
            body["id"] = self.id
        body |= {"code": self.code, "message": self.message}
        body["details"] = details if self.field else []
        return msgspec.json.encode(body).decode()


def invalid(message: str, field: str | None = None, id: Any = None) -> Refusal:
    return Refusal("VALIDATION_ERROR", message, field, id)


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_NAMED = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`")


def parse(raw: str | bytes) -> ClientMessage:
    """One client message, or a Refusal (VALIDATION_ERROR) naming what is wrong, with the
    message's `id` when it had a readable one."""
    if isinstance(raw, bytes):
        raise invalid("messages are JSON text frames, not binary")
    if len(raw) > MAX_MESSAGE_CHARS:
        raise invalid(f"a message is at most {MAX_MESSAGE_CHARS} characters")
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise invalid("a message must be a JSON object") from None
    if not isinstance(body, dict):
        raise invalid("a message must be a JSON object")
    ident = body.get("id") if isinstance(body.get("id"), str | int) else None
    if "type" not in body:
        raise invalid("type: one of auth, subscribe, unsubscribe, ping", "type", ident)
    try:
        return msgspec.convert(body, ClientMessage)
    except msgspec.ValidationError as error:
        raise _refusal(str(error), ident) from None


def _refusal(text: str, ident: Any) -> Refusal:
    """msgspec's message (`Expected int, got str - at $.after`) as the API's detail."""
    path = ""
    if at := _AT.search(text):
        path, text = at["path"], text[: at.start()]
    if named := _NAMED.match(text):
        path = f"{path}.{named['name']}" if path else named["name"]
        text = "required" if named["what"] == "missing required" else "not a field of it"
    if path == "type":
        text = "one of auth, subscribe, unsubscribe, ping"
    return invalid(f"{path}: {text}" if path else text, path or None, ident)


def names(value: Names | None) -> str | None:
    """A list of names as the SSE feed's comma-separated query value (its parsers)."""
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


def frame(kind: str, **fields: Any) -> str:
    return msgspec.json.encode({"type": kind, **fields}).decode()


def event_framer(subscription: Any) -> Callable[[CloudEvent], str]:
    """The frames of one subscription's events: `{"type": "event", "subscription": id,
    "event": <CloudEvent>}`, the head encoded once per subscription and the envelope once
    per event, as NATS and SSE carry it."""
    head = msgspec.json.encode({"type": "event", "subscription": subscription}).decode()
    head = head[:-1] + ',"event":'
    return lambda event: head + envelope.text_of(event) + "}"
