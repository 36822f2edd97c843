"""The built-in plugin catalog: schemas of the steps every Norn installation has."""

from __future__ import annotations

from typing import Annotated

import msgspec

from infrastructure.plugins.base import Plugin
from infrastructure.plugins.files import InputFile, OutputFile
from infrastructure.plugins.http import InputHttp
from infrastructure.plugins.processing import Aggregate, Filter, Transform

Url = Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=4096)]


class _Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


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
