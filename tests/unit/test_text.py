"""The NUL rule of domain/text.py: every place is found whatever the shape (the fast
check that skips the walk must never hide one), and text that merely looks like an
escaped NUL is fine."""

from __future__ import annotations

import dataclasses

import msgspec

from domain.text import nul_errors


class Step(msgspec.Struct):
    name: str
    config: dict[str, object]


@dataclasses.dataclass
class Opaque:
    text: str


def places(value: object) -> list[str]:
    return [error.field for error in nul_errors(value, "")]


def test_each_place_holding_nul_is_named() -> None:
    value = {
        "name": "a\x00",
        "steps": [Step("s", {"path": "in\x00.jsonl", "k\x00": 1}), ("ok", "x\x00")],
        "n": 3,
    }
    assert places(value) == ["name", "steps[0].config", "steps[0].config.path", "steps[1][1]"]


def test_no_nul_is_no_error_even_where_json_cannot_go() -> None:
    assert places({"a": ["b", {"c": 1.5, "d": None}]}) == []
    assert places({(1, 2): "tuple keys are not JSON"}) == []  # the walk answers
    assert places({"opaque": Opaque("x")}) == []


def test_text_that_looks_like_an_escaped_nul_is_fine() -> None:
    assert places({"path": "C:\\u0000"}) == []
