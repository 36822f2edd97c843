"""Log lines as NORN_LOG_FORMAT=json writes them, collected during a test."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from infrastructure import logs


@contextlib.contextmanager
def json_log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line written meanwhile, as the JSON format writes it."""
    lines: list[dict[str, Any]] = []
    formatter = logs.JsonFormatter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))

    handler = Collect(level=logging.INFO)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
