"""POST /api/v1/batch (README "Batch"): up to 100 operations, run in order, each as if
sent alone. Each is dispatched as a request of its own through this very app, with the
batch request's credentials: authentication, its permission, its rate limit (a token
each), Idempotency-Key, validation and the error mapping are exactly the route's.

Atomic (`"atomic": true`): the operations run staged in one unit of work
(application/unit_of_work.py) and their events are appended together at the end, or none
if any operation failed. Which operations may be atomic is checked before any runs
(api/controllers/batch_rules.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.types import Message, Receive, Scope

from api.controllers.batch_rules import Prepared, prepare
from api.errors import request_id_of
from api.rate_limit import STATE_KEY as RATE_LIMIT_HEADERS
from api.schemas.batch import BatchRequest, BatchResponse, OperationResult
from application.threads import in_thread
from application.unit_of_work import PENDING, UnitOfWork, staging

BATCH = {
    # Each operation is authorised as its route says; the batch itself needs credentials.
    "permission": "authenticated",
    "idempotency": "refuse",
    "idempotency_reason": "give each operation its own Idempotency-Key, so that a retry "
    "replays the operations that ran and runs the others",
}

SHOWN_HEADERS = frozenset(
    {
        "etag",
        "location",
        "retry-after",
        "link",
        "x-total-count",
        "idempotent-replayed",
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)
"""The response headers an operation's result carries (lower case)."""
_CREDENTIALS = (b"authorization", b"x-api-key", b"x-tenant-id", b"host", b"user-agent")
"""What every operation takes from the batch request: who it is, acting where."""


class BatchController(Controller):
    path = "/api/v1/batch"
    tags = ["batch"]

    @post("/", opt=BATCH, status_code=200, summary="Run up to 100 operations in order")
    async def run(self, data: JSONBody[BatchRequest], request: Request) -> Response[BatchResponse]:
        operations = prepare(data.operations, atomic=data.atomic)
        dispatch = _Dispatcher(request)
        if not data.atomic:
            results = [await dispatch(i, op) for i, op in enumerate(operations)]
            dispatch.pass_on_rate_limit()
            return Response(BatchResponse(results, False, None, None))
        unit = UnitOfWork()
        results = []
        with staging(unit):  # the operations' appends are kept for the commit
            for index, operation in enumerate(operations):
                result = await dispatch(index, operation)
                results.append(result)
                if not 200 <= result.status < 300:
                    dispatch.pass_on_rate_limit()
                    aborted = _aborted(results, len(operations), dispatch.request_id)
                    return Response(BatchResponse(aborted, True, False, None))
        dispatch.pass_on_rate_limit()
        # One append of every operation's events: what it raises (a concurrent change
        # won, a namespace removed meanwhile) answers the batch, nothing applied.
        container: Any = request.app.state.container
        position = await in_thread(unit.commit, container.store)
        for result in results:
            if isinstance(result.body, dict) and result.body.get("position") == PENDING:
                result.body["position"] = position
        return Response(BatchResponse(results, True, position is not None, position))


class _Dispatcher:
    """Sends operations through the app as requests of their own, as the batch's caller."""

    def __init__(self, request: Request) -> None:
        self._app = request.app
        self._outer: Scope = request.scope
        self._receive: Receive = request.receive
        outer_headers = request.scope["headers"]
        self._inherited = [(k, v) for k, v in outer_headers if k in _CREDENTIALS]
        self.request_id = request_id_of(request)
        self._correlation = request.headers.get("x-correlation-id") or self.request_id
        self._rate_limit: list[tuple[bytes, bytes]] | None = None

    async def __call__(self, index: int, operation: Prepared) -> OperationResult:
        headers = [
            *self._inherited,
            (b"x-request-id", f"{self.request_id[:56]}.{index}".encode()),
        ]
        if not any(name == b"x-correlation-id" for name, _ in operation.headers):
            headers.append((b"x-correlation-id", self._correlation[:128].encode()))
        headers.extend(operation.headers)
        if operation.body is not None:
            headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(operation.body)).encode()))
        outer = self._outer
        scope: Any = {
            "type": "http",
            "asgi": outer.get("asgi", {"version": "3.0"}),
            "http_version": outer.get("http_version", "1.1"),
            "scheme": outer.get("scheme", "http"),
            "server": outer.get("server"),
            "client": outer.get("client"),
            "root_path": outer.get("root_path", ""),
            "method": operation.method,
            "path": operation.path,
            "raw_path": operation.raw_path,
            "query_string": operation.query,
            "headers": headers,
            "state": {},
        }
        answer = _Answer()
        # In a task of its own: what the operation sets in context variables (its
        # `fields=` selection, api/query_rules.py) stays its own and cannot shape the
        # batch's answer. It still sees the batch's (an atomic batch's unit of work).
        await asyncio.create_task(self._app(scope, self._body(operation.body), answer.send))
        result = answer.result()
        if "x-ratelimit-limit" in result.headers:
            self._rate_limit = [
                (name.encode(), result.headers[name].encode())
                for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
            ]
        return result

    def _body(self, body: bytes | None) -> Receive:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            # Afterwards, what the batch's own connection says (its client going away).
            return await self._receive()

        return receive

    def pass_on_rate_limit(self) -> None:
        """The batch answers the rate-limit headers of its last operation: the bucket as
        it is after all of them, not as it was when the batch came in."""
        if self._rate_limit is not None:
            self._outer.setdefault("state", {})[RATE_LIMIT_HEADERS] = self._rate_limit


class _Answer:
    """Collects one operation's response."""

    def __init__(self) -> None:
        self.status = 500  # if the app never started a response
        self.headers: dict[str, str] = {}
        self.content_type = ""
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for raw_name, raw_value in message.get("headers", []):
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                if name in SHOWN_HEADERS:
                    self.headers[name] = value
                elif name == "content-type":
                    self.content_type = value
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    def result(self) -> OperationResult:
        raw = b"".join(self.chunks)
        body: Any = None
        if raw and "json" in self.content_type:
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                body = raw.decode("utf-8", "replace")
        elif raw:
            body = raw.decode("utf-8", "replace")
        return OperationResult(self.status, self.headers, body)


def _aborted(results: list[OperationResult], count: int, request_id: str) -> list[OperationResult]:
    """An atomic batch whose operation failed: that operation's own answer, and for every
    other one a 424 saying it was not applied (it ran, but its events were dropped) or not
    run at all."""
    failed = len(results) - 1
    answers = []
    for index in range(count):
        if index == failed:
            answers.append(results[index])
            continue
        done = "not applied" if index < failed else "not run"
        message = f"{done}: operation {failed} of this atomic batch failed; nothing was applied"
        error = {
            "code": "FAILED_DEPENDENCY",
            "message": message,
            "details": [{"field": f"operations[{failed}]", "message": "failed"}],
            "request_id": f"{request_id[:56]}.{index}",
        }
        answers.append(OperationResult(424, {}, {"error": error}))
    return answers
