"""Idempotency-Key on writes (README "Idempotency-Key"): a retry with the same key by the same
principal gets the first response back, marked `Idempotent-Replayed: true`, and the
command runs once. Only successful (2xx) responses are kept: after a client error the key
is free again, so the client can correct the request and retry with the same key.

No crash lets a key act twice (docs/architecture.md "Idempotent commands"): the response
is sent only once it is kept; the key's lease is short and renewed while the command
runs, so a retry takes over from a process that died within seconds; and the command
gets the key (CommandContext.idempotency) to derive the ids of what it creates, so the
retry finds what the dead attempt appended and answers it instead of creating it again.

The key belongs to the principal acting in a tenant; reusing it for a different request
(method, path, query or body) is refused with 422. A concurrent duplicate waits for the
first to finish and then gets its response.

A route whose response must never be stored (it carries a secret shown once, like a new
API key) declares opt={"idempotency": "refuse"}: an Idempotency-Key on it is a 422."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.crash_points import CrashPoint
from application.principal import Principal
from domain.events import Idempotency
from infrastructure.idempotency import IdempotencyStore, StoredResponse

HEADER = b"idempotency-key"
_REPLAYED = b"idempotent-replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_REPLAYED_HEADERS = {"content-type", "etag", "location"}
_MAX_STORED_BODY = 1_048_576
_WAIT_FOR_FIRST = 10.0


class IdempotencyMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self) -> None:
        self._crash = CrashPoint.from_env()

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        raw_key = _header(scope, HEADER)
        principal = scope.get("user")
        if (
            scope["method"] not in _WRITES
            or raw_key is None
            or not isinstance(principal, Principal)
        ):
            await next_app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        if handler is not None and handler.opt.get("idempotency") == "refuse":
            reason = handler.opt.get(
                "idempotency_reason",
                "its response holds a secret that is shown once and never stored",
            )
            raise ValidationException(
                f"this route does not accept Idempotency-Key: {reason}; retry without the header",
                status_code=422,
                extra=[{"key": "Idempotency-Key", "source": "header", "message": "not allowed"}],
            )
        key = raw_key.decode("latin-1")
        if not _KEY.fullmatch(key):
            raise ValidationException(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
                extra=[{"key": "Idempotency-Key", "source": "header", "message": "invalid"}],
            )
        container = scope["app"].state.container
        body_limit = container.settings.max_body_bytes
        chunks, complete = await _read_body(receive, body_limit)
        replay_receive = _replaying(chunks, complete, receive)
        if not complete:  # over the limit: the route answers 413 itself, nothing to keep
            await next_app(scope, replay_receive, send)
            return
        store: IdempotencyStore = container.idempotency
        who = f"{principal.subject_id}@{principal.tenant_id or '_'}"
        fingerprint = _fingerprint(scope, b"".join(chunks))
        reservation = await _reserve(store, who, key, fingerprint)
        if reservation.stored is not None:
            await _send_stored(send, reservation.stored)
            return
        generation = reservation.generation
        idempotency = Idempotency(
            key_id(who, key, fingerprint, generation),
            earlier_attempt=reservation.taken_over,
        )
        scope.setdefault("state", {})["idempotency"] = idempotency
        captured = _Capture(send)
        renewing = asyncio.create_task(_renew(store, who, key, generation))
        try:
            await next_app(scope, replay_receive, captured.send)
        except BaseException:
            await store.release(who, key, may_have_acted=True)
            raise
        finally:
            renewing.cancel()
        self._reached("idempotency-after-command", key)
        if idempotency.answered_earlier:  # what an earlier attempt did, found again
            captured.mark_replayed()
        response = captured.response()
        if response is not None and 200 <= response.status < 300:
            await store.complete(who, key, response)
            self._reached("idempotency-after-record", key)
        else:
            # A server error may come after the command acted, and a response too large
            # to keep did act: a retry takes the key over and finds what was made.
            acted = response is None or response.status >= 500
            await store.release(who, key, may_have_acted=acted)
        await captured.flush()

    def _reached(self, point: str, key: str) -> None:
        if self._crash is not None:
            self._crash.reached(point, key)


async def _renew(store: IdempotencyStore, who: str, key: str, generation: Any) -> None:
    """Renew the key's lease while the request runs, so that only a dead process's lease
    runs out (and a retry takes over within one lease)."""
    interval = store.lease.total_seconds() / 3
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):  # the next beat tries again
            await store.renew(who, key, generation)


def key_id(who: str, key: str, fingerprint: bytes, generation: datetime) -> str:
    """What a command derives the ids of what it creates from: the same for every
    attempt of one request with one key, until the key expires. The generation is
    spelled in UTC: a session's time zone must not change it."""
    spelled = generation.astimezone(UTC).isoformat()
    digest = hashlib.sha256()
    for part in (who.encode(), key.encode(), fingerprint, spelled.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def _reserve(store: IdempotencyStore, who: str, key: str, fingerprint: bytes) -> Any:
    deadline = asyncio.get_running_loop().time() + _WAIT_FOR_FIRST
    while True:
        reservation = await store.reserve(who, key, fingerprint)
        if reservation.mismatch:
            raise ValidationException(
                "this Idempotency-Key was already used for a different request",
                status_code=422,
                extra=[{"key": "Idempotency-Key", "source": "header", "message": "already used"}],
            )
        if reservation.won or reservation.stored is not None:
            return reservation
        if asyncio.get_running_loop().time() > deadline:
            raise HTTPException(
                status_code=409,
                detail="a request with this Idempotency-Key is still in progress; retry later",
                headers={"Retry-After": "1"},
            )
        await asyncio.sleep(0.05)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _fingerprint(scope: Scope, body: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope["query_string"], body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


async def _read_body(receive: Receive, limit: int) -> tuple[list[bytes], bool]:
    """The request body as received, and whether it ended within `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return chunks, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return chunks, True
        if size > limit:
            return chunks, False


def _replaying(chunks: list[bytes], complete: bool, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the route, then reads on."""
    pending = list(chunks)

    async def replay() -> Message:
        if pending:
            chunk = pending.pop(0)
            more = bool(pending) or not complete
            return {"type": "http.request", "body": chunk, "more_body": more}
        return await receive()

    return replay


class _Capture:
    """Holds the response back, keeping a copy, until `flush`: the client gets it only
    once it is kept. One too large to keep is passed through as it comes."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._status: int | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._held: list[Message] = []
        self._size = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            for name, value in message.get("headers", []):
                if name.decode("latin-1").lower() in _REPLAYED_HEADERS:
                    self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self._size += len(chunk)
            if self._size <= _MAX_STORED_BODY:
                self._body.append(chunk)
        self._held.append(message)
        if self._size > _MAX_STORED_BODY:
            await self.flush()

    def mark_replayed(self) -> None:
        """Say that this answer is an earlier attempt's (if it is still held back)."""
        for message in self._held:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != _REPLAYED]
                message["headers"] = [*headers, (_REPLAYED, b"true")]

    async def flush(self) -> None:
        held, self._held = self._held, []
        for message in held:
            await self._send(message)

    def response(self) -> StoredResponse | None:
        if self._status is None or self._size > _MAX_STORED_BODY:
            return None
        return StoredResponse(self._status, self._headers, b"".join(self._body))


async def _send_stored(send: Send, stored: StoredResponse) -> None:
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers]
    headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((_REPLAYED, b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})
