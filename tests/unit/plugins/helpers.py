"""Running a plugin the way the executor does, and a local HTTP server to talk to."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infrastructure.plugins.base import Plugin, Record, StepContext
from infrastructure.plugins.files import InputFile, OutputFile


def make_context(tmp_path: Path, **overrides: Any) -> StepContext:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    logs: list[tuple[str, str]] = []
    values: dict[str, Any] = {
        "tenant_id": "t-1",
        "run_id": "run-1",
        "step_name": "step",
        "workspace": workspace,
        "files": tmp_path / "files" / "t-1",
        "params": {},
        "cancelled": asyncio.Event(),
        "logger": lambda level, message: logs.append((level, message)),
    }
    values.update(overrides)
    context = StepContext(**values)
    context.logs = logs  # type: ignore[attr-defined]
    return context


async def stream(records: Iterable[Record]) -> AsyncIterator[Record]:
    for record in records:
        yield record


def execute(
    plugin: type[Plugin], config: dict[str, Any], context: StepContext, records: Any = ()
) -> AsyncIterator[Record]:
    """The plugin's output stream; the config must pass the catalog's checks first."""
    parsed = plugin.parse_config(config)
    assert plugin.check(parsed) == []
    upstream = records if hasattr(records, "__anext__") else stream(records)
    return plugin().execute(parsed, context, upstream)


async def run(
    plugin: type[Plugin], config: dict[str, Any], context: StepContext, records: Any = ()
) -> list[Record]:
    return [r async for r in execute(plugin, config, context, records)]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True


Route = Callable[[Request], Reply]


class LocalServer:
    """A real HTTP/1.0 server on 127.0.0.1 in a thread. Routes map a path to a function
    of the request; every request is recorded. `hold` makes a route wait until the test
    ends (for timeouts and cancellation); `arrived` is set when a held request comes."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.release = threading.Event()
        self.arrived = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                server.requests.append(request)
                route = server.routes.get(self.path.split("?")[0])
                reply = route(request) if route else Reply(404, b"no such route")
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                try:
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def hold(self, request: Request) -> Reply:
        self.arrived.set()
        self.release.wait(30)
        return Reply(200, b"[]")

    def start(self) -> LocalServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


# --- files -------------------------------------------------------------------------------

ORDERS = [
    {"id": 1, "amount": 12.5, "status": "paid", "note": None, "vip": True},
    {"id": 2, "amount": 3, "status": "open", "note": "call back", "vip": False},
]


def tenant_file(context: StepContext, relative: str) -> Path:
    return context.files / relative


def leftovers(context: StepContext) -> list[str]:
    return [p.name for p in context.files.rglob("*norn-tmp*")]


async def write(context: StepContext, records: list[Record], **config: str) -> list[Record]:
    return await run(OutputFile, config, context, records)


async def read(context: StepContext, **config: object) -> list[Record]:
    return await run(InputFile, config, context)
