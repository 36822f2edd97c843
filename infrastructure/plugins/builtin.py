"""The built-in plugin catalog: the steps every Norn installation has. Each family lives
in its own module; this one only lists them."""

from __future__ import annotations

from infrastructure.plugins.base import Plugin
from infrastructure.plugins.files import InputFile, OutputFile
from infrastructure.plugins.http import InputHttp
from infrastructure.plugins.postgres import InputPostgres, OutputPostgres
from infrastructure.plugins.processing import Aggregate, Filter, Transform
from infrastructure.plugins.webhook import OutputWebhook

__all__ = [
    "BUILTIN_PLUGINS",
    "Aggregate",
    "Filter",
    "InputFile",
    "InputHttp",
    "InputPostgres",
    "OutputFile",
    "OutputPostgres",
    "OutputWebhook",
    "Transform",
]

BUILTIN_PLUGINS: tuple[type[Plugin], ...] = (
    InputFile,
    InputHttp,
    InputPostgres,
    Filter,
    Transform,
    Aggregate,
    OutputFile,
    OutputWebhook,
    OutputPostgres,
)
