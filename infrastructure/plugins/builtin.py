"""The built-in plugin catalog: schemas of the steps every Norn installation has."""

from __future__ import annotations

from typing import Annotated

import msgspec

from infrastructure.plugins.base import Plugin
from infrastructure.plugins.files import InputFile, OutputFile
from infrastructure.plugins.processing import Aggregate, Filter, Transform

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=4096)]


class _Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class InputHttp(Plugin):
    type, name = "Input", "http"
    description = "GET JSON from a URL; a list becomes records, an object one record."

    class Config(_Config):
        url: Url
        headers: dict[str, str] = {}
        timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
        max_bytes: Annotated[int, msgspec.Meta(gt=0, le=100_000_000)] = 10_000_000
        records_path: str | None = None


class OutputWebhook(Plugin):
    type, name = "Output", "webhook"
    description = "POST records as JSON, signed with X-Norn-Signature when a secret is set."

    class Config(_Config):
        url: Url
        headers: dict[str, str] = {}
        secret: str | None = None
        batch_size: Annotated[int, msgspec.Meta(gt=0, le=10_000)] = 500
        timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0


BUILTIN_PLUGINS: tuple[type[Plugin], ...] = (
    InputFile,
    InputHttp,
    Filter,
    Transform,
    Aggregate,
    OutputFile,
    OutputWebhook,
)
