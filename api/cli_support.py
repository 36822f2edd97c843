"""What the `norn` command needs besides its commands: user errors as one line, URLs
with their secrets hidden, a progress line, and the HTTP listening socket."""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit


class CliError(Exception):
    """A failure the user can act on: printed as `norn: <message>`, no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def error_summary(error: BaseException) -> str:
    """An exception's message in one line (a driver's message can run to several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def say(message: str) -> None:
    """A note for the operator, on stderr (stdout stays for a command's output)."""
    print(f"norn: {message}", file=sys.stderr, flush=True)


_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` fit to print: a password (or a NATS token, given as the user) becomes ***.
    Handles URLs (postgresql://, nats://) and libpq key=value strings."""
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    query = _CONNINFO_PASSWORD.sub(r"\1***", parts.query.replace("&", " ")).replace(" ", "&")
    if "@" not in parts.netloc:
        return urlunsplit(parts._replace(query=query))
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    if has_password:
        userinfo = f"{user}:***" if password else user
    elif parts.scheme.startswith("nats") or parts.scheme == "tls":
        userinfo = "***"  # nats://TOKEN@host: the user part is the secret
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}", query=query))


def open_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The API's listening socket, made before anything else starts: a busy port or an
    address that is not this machine's fails here, before the data dir, the embedded
    servers or the admin are touched; and no other program can take the port between
    this check and the server starting (uvicorn serves on this very socket)."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restart may bind while the last connections are in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening now: clients connecting during start-up wait in the backlog.
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ProgressLine:
    """`done/total` of a long job, with its rate and time left. On a terminal one line
    rewritten in place (at most 10 times a second); elsewhere (a log file, a pipe) a
    whole line every `every` seconds, so the output stays readable."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        tty: bool | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._every = every if not self._tty else 0.1
        self._clock = clock
        self._started = clock()
        self._first: int | None = None
        self._last_shown = float("-inf")
        self._shown_any = False

    def update(self, done: int, total: int) -> None:
        now = self._clock()
        if self._first is None:
            self._first = done
        final = done >= total
        if not final and now - self._last_shown < self._every:
            return
        self._last_shown = now
        self._show(self.describe(done, total, now))

    def describe(self, done: int, total: int, now: float) -> str:
        elapsed = now - self._started
        rate = (done - (self._first or 0)) / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * done / total if total else 100.0
        line = f"{self._label}: {done}/{total} ({percent:.0f}%)"
        if rate > 0:
            line += f", {rate:,.0f}/s"
            if done < total:
                line += f", about {_duration((total - done) / rate)} left"
        return line

    def _show(self, line: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._shown_any = True

    def finish(self) -> None:
        """End the line in place (a terminal) so what follows starts on its own."""
        if self._tty and self._shown_any:
            self._stream.write("\n")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def admin_password_block(username: str, password: str) -> str:
    """The first start's admin credentials as a block that stands out from log lines:
    it is the only time the password is shown."""
    rule = "=" * 72
    return "\n".join(
        [
            "",
            rule,
            "  Norn created a platform admin. This password is shown ONCE, now:",
            "",
            f"      username: {username}",
            f"      password: {password}",
            "",
            "  Keep it somewhere safe. To choose the admin yourself instead, set",
            "  NORN_ADMIN_USERNAME and NORN_ADMIN_PASSWORD before the first start.",
            rule,
            "",
        ]
    )
