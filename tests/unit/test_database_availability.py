"""The verdict on PostgreSQL's availability (infrastructure/database_availability.py),
with a fake connect: suspected, probed, down, refused, and up again."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from infrastructure.database_availability import (
    DatabaseAvailability,
    DatabaseUnavailable,
    has_pending_input,
)


class _Server:
    def __init__(self) -> None:
        self.answers = True
        self.attempts = 0

    def connect(self) -> _Server:
        self.attempts += 1
        if not self.answers:
            raise ConnectionRefusedError("refused")
        return self

    def close(self) -> None:
        pass


def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_suspicion_that_the_probe_refutes_refuses_nothing() -> None:
    server = _Server()
    availability = DatabaseAvailability("", connect=server.connect)
    availability.suspect()
    _until(lambda: server.attempts == 1)
    availability.raise_if_down()
    assert not availability.down


def test_down_refuses_at_once_until_a_probe_gets_through() -> None:
    server = _Server()
    server.answers = False
    availability = DatabaseAvailability("", connect=server.connect)
    try:
        availability.suspect()
        _until(lambda: availability.down)
        with pytest.raises(DatabaseUnavailable):
            availability.raise_if_down()
        _until(lambda: server.attempts >= 2)  # it keeps probing while down
        server.answers = True
        _until(lambda: not availability.down)
        availability.raise_if_down()
        assert availability.outages == 1
    finally:
        availability.close()


def test_suspicions_right_after_an_answer_start_no_probe() -> None:
    server = _Server()
    availability = DatabaseAvailability("", connect=server.connect)
    availability.suspect()
    _until(
        lambda: (
            server.attempts == 1
            and not any(t.name == "norn-db-probe" for t in threading.enumerate())
        )
    )
    availability.suspect()
    time.sleep(0.05)
    assert server.attempts == 1


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.closed = False
        self.pgconn = type("PGconn", (), {"socket": sock.fileno()})()


def test_a_socket_the_peer_closed_has_pending_input() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert not has_pending_input(_Conn(ours))
        theirs.close()
        assert has_pending_input(_Conn(ours))
    finally:
        ours.close()
