"""Log lines, as text or JSON (NORN_LOG_FORMAT), each carrying the request, tenant and
run it was written for when known.

The ids live in context variables: the API sets the request id for the whole request
(api/app.py) and the tenant once authentication found it (api/auth.py); an executor
sets the run and tenant around a run (infrastructure/workers.py). asyncio tasks and
`asyncio.to_thread` copy the context, so the application code below them, in threads
too, logs with the ids without passing them around."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("norn_request_id", default=None)
tenant_id: ContextVar[str | None] = ContextVar("norn_tenant_id", default=None)
run_id: ContextVar[str | None] = ContextVar("norn_run_id", default=None)

_CONTEXT = (("request_id", request_id), ("tenant_id", tenant_id), ("run_id", run_id))
LOG_FORMATS = ("text", "json")


@contextmanager
def run_context(run: str, tenant: str | None) -> Iterator[None]:
    """Log lines written inside carry the run and its tenant."""
    run_token = run_id.set(run)
    tenant_token = tenant_id.set(tenant)
    try:
        yield
    finally:
        tenant_id.reset(tenant_token)
        run_id.reset(run_token)


def context_fields() -> dict[str, str]:
    return {name: value for name, var in _CONTEXT if (value := var.get()) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the
    context's ids, and `exception` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(context_fields())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [request_id=… tenant_id=… run_id=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = context_fields()
        if not fields:
            return text
        suffix = " ".join(f"{name}={value}" for name, value in fields.items())
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} [{suffix}]{newline}{rest}"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record is emitted, as logging.lastResort
    does, not to the stream it was made with: a host that swaps stderr (pytest does, per
    test) would otherwise leave it writing to a closed file ("--- Logging error ---")."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(level: str, log_format: str = "text") -> None:
    """The root logger writes to stderr in `log_format`; everything propagates to it
    (uvicorn too: it is started without a logging config of its own). Called again, it
    replaces its own handler and leaves any other (a host's, e.g. pytest's) alone."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, StderrHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
