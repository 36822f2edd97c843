"""The WebSocket feed's client messages (api/schemas/ws.py): each type read into its
struct, and everything else refused in the API's terms (VALIDATION_ERROR, the field by
its path, the message's own id when it had one), never an exception of the parser's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.schemas import ws
from api.schemas.ws import Auth, Ping, Refusal, Subscribe, Unsubscribe


def test_each_message_type_is_read_into_its_struct() -> None:
    assert ws.parse('{"type": "auth", "token": "t"}') == Auth(token="t")
    assert ws.parse('{"type": "auth", "api_key": "nrn_x", "id": 1}') == Auth(api_key="nrn_x", id=1)
    assert ws.parse('{"type": "ping"}') == Ping()
    assert ws.parse('{"type": "unsubscribe", "id": "a"}') == Unsubscribe(id="a")
    full = ws.parse(
        json.dumps(
            {
                "type": "subscribe",
                "id": "s",
                "types": ["norn.run.*", "norn.pipeline.created.v1"],
                "resources": "pipeline:9f3c2a56-0c7e-4a53-9a43-5bd2f4b3b0a1",
                "actor": "user:1",
                "after": 0,
            }
        )
    )
    assert isinstance(full, Subscribe) and full.after == 0
    assert ws.names(full.types) == "norn.run.*,norn.pipeline.created.v1"
    assert ws.names(full.resources) == "pipeline:9f3c2a56-0c7e-4a53-9a43-5bd2f4b3b0a1"
    assert ws.names(None) is None


def _refusal(raw: str | bytes) -> dict[str, Any]:
    with pytest.raises(Refusal) as refused:
        ws.parse(raw)
    frame = json.loads(refused.value.frame())
    assert frame["type"] == "error" and frame["code"] == "VALIDATION_ERROR", frame
    assert frame["message"], frame
    return frame


@pytest.mark.parametrize(
    ("raw", "field", "ident"),
    [
        ('{"type": "subscribe"}', "id", None),
        ('{"type": "subscribe", "id": ""}', "id", ""),
        ('{"type": "subscribe", "id": 1.5}', "id", None),
        ('{"type": "subscribe", "id": "s", "after": -1}', "after", "s"),
        ('{"type": "subscribe", "id": "s", "after": "3"}', "after", "s"),
        ('{"type": "subscribe", "id": "s", "types": [1]}', "types[0]", "s"),
        ('{"type": "subscribe", "id": "s", "colour": "red"}', "colour", "s"),
        ('{"type": "unsubscribe"}', "id", None),
        ('{"type": "auth", "token": 5}', "token", None),
        ('{"type": "dance", "id": 3}', "type", 3),
        ('{"id": "s"}', "type", "s"),
        ('{"type": 1}', "type", None),
    ],
)
def test_an_invalid_field_is_named_with_the_messages_id(raw: str, field: str, ident: Any) -> None:
    frame = _refusal(raw)

    assert [d["field"] for d in frame["details"]] == [field], frame
    assert frame.get("id") == ident, frame


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1, 2]", '"text"', "null", b'{"type": "ping"}', "[" * 60_000 + "]" * 60_000],
)
def test_what_is_not_a_json_object_text_frame_is_refused_naming_no_field(
    raw: str | bytes,
) -> None:
    frame = _refusal(raw)

    assert frame["details"] == [] and "id" not in frame


def test_a_message_over_the_size_limit_is_refused_unread() -> None:
    frame = _refusal('{"type": "ping", "id": "' + "x" * ws.MAX_MESSAGE_CHARS + '"}')

    assert "at most" in frame["message"]


def test_frames_are_json_and_a_refusal_carries_its_figures() -> None:
    assert json.loads(ws.frame("ack", id="s")) == {"type": "ack", "id": "s"}
    refusal = Refusal("QUOTA_EXCEEDED", "too many", "subscriptions", "s", limit=20, used=20)
    assert json.loads(refusal.frame())["details"] == [
        {"field": "subscriptions", "message": "too many", "limit": 20, "used": 20}
    ]
