"""Building blocks of the built-in plugins' config schemas."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=4096)]
Format = Literal["jsonl", "csv", "json"]
Seconds = Annotated[
    float,
    msgspec.Meta(
        gt=0, le=300, description="Seconds allowed to connect, and between any two reads or writes."
    ),
]
RecordsPath = Annotated[
    str,
    msgspec.Meta(
        max_length=1024,
        description="Dotted path to the list of records inside the JSON document, e.g. "
        "data.items (a list gives one record per element, an object one record).",
    ),
]


class StepConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A step's config: unknown fields are errors, never ignored."""


def relative_path_problems(path: str) -> list[str]:
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or ".." in parts:
        return ["config.path: must be relative to the tenant's folder, without '..'"]
    return []
