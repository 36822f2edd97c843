"""The Session aggregate: given these events, when this command, then these events (or
this error). Pure domain, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from domain.errors import InvalidCommand
from domain.events import CommandContext, NornEvent
from domain.session import Session, SessionEnded, SessionRefreshed, SessionStarted

CTX = CommandContext("user:u1", "corr-1", "cause-1")
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=7)


def start(expires_at: datetime = EXPIRES, tenant_id: str | None = "tenant-1") -> Session:
    return Session.start(
        session_id=uuid4(),
        user_id="user-1",
        tenant_id=tenant_id,
        credentials_version=3,
        expires_at=expires_at,
        ctx=CTX,
    )


def given(*changes: Any) -> Session:
    """A started session with `changes` applied (each a callable on the session), its
    events replayed into a fresh aggregate, so the test sees what the store would."""
    session = start()
    for change in changes:
        change(session)
    aggregate: Any = None
    for event in session.collect_events():
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Session)
    return aggregate


def rotated(generation: int) -> Any:
    return lambda session: session.rotate(generation, NOW, CTX)


def ended(reason: str = "logout") -> Any:
    return lambda session: session.end(reason, CTX)


@pytest.mark.parametrize(
    ("event_class", "type_name"),
    [
        (SessionStarted, "norn.session.started.v1"),
        (SessionRefreshed, "norn.session.refreshed.v1"),
        (SessionEnded, "norn.session.ended.v1"),
    ],
)
def test_event_type_names(event_class: type[NornEvent], type_name: str) -> None:
    assert event_class.type_name() == type_name


# --- start --------------------------------------------------------------------------------


def test_start_records_session_started_at_generation_1() -> None:
    session = start()

    [event] = session.collect_events()
    assert isinstance(event, SessionStarted)
    assert event.originator_id == session.id
    assert (event.user_id, event.credentials_version, event.expires_at) == ("user-1", 3, EXPIRES)
    assert (event.tenant_id, event.actor, event.correlation_id) == ("tenant-1", "user:u1", "corr-1")
    assert session.generation == 1
    assert session.ended is False
    assert session.usable_at(NOW) is True


def test_start_needs_a_time_zone_aware_expiry() -> None:
    with pytest.raises(InvalidCommand, match="time zone") as raised:
        start(expires_at=datetime(2030, 1, 8, 12, 0))  # naive: the point of the test

    assert raised.value.field == "expires_at"


def test_a_platform_admin_session_has_no_tenant() -> None:
    [event] = start(tenant_id=None).collect_events()

    assert event.tenant_id is None


def test_a_session_is_usable_until_it_expires() -> None:
    session = given()

    assert session.usable_at(EXPIRES - timedelta(seconds=1)) is True
    assert session.usable_at(EXPIRES) is False


# --- rotate -------------------------------------------------------------------------------


def test_rotate_with_the_current_generation_records_session_refreshed_n_plus_1() -> None:
    session = given()

    generation = session.rotate(1, NOW, CTX)

    assert generation == 2
    [event] = session.collect_events()
    assert isinstance(event, SessionRefreshed)
    assert event.generation == 2
    assert (event.tenant_id, event.actor, event.causation_id) == ("tenant-1", "user:u1", "cause-1")
    assert session.generation == 2 and session.ended is False


def test_each_rotation_moves_one_generation_on() -> None:
    session = given(rotated(1), rotated(2))

    assert session.generation == 3
    assert session.rotate(3, NOW, CTX) == 4


@pytest.mark.parametrize("presented", [1, 2, 4, 0])
def test_rotate_with_another_generation_ends_the_session_as_reuse(presented: int) -> None:
    session = given(rotated(1), rotated(2))  # current generation: 3

    generation = session.rotate(presented, NOW, CTX)

    assert generation is None
    [event] = session.collect_events()
    assert isinstance(event, SessionEnded)
    assert event.reason == "refresh_token_reuse"
    assert session.ended is True and session.end_reason == "refresh_token_reuse"
    assert session.usable_at(NOW) is False


def test_after_reuse_even_the_current_generation_cannot_rotate() -> None:
    session = given(rotated(1), rotated(1))  # the second presents generation 1 again

    assert session.ended is True
    with pytest.raises(InvalidCommand, match="ended or expired"):
        session.rotate(2, NOW, CTX)
    assert session.collect_events() == []


def test_rotate_after_logout_is_refused() -> None:
    session = given(ended("logout"))

    with pytest.raises(InvalidCommand, match="ended or expired"):
        session.rotate(1, NOW, CTX)
    assert session.collect_events() == []


@pytest.mark.parametrize("at", [EXPIRES, EXPIRES + timedelta(days=1)])
def test_rotate_after_expiry_is_refused(at: datetime) -> None:
    session = given()

    with pytest.raises(InvalidCommand, match="ended or expired"):
        session.rotate(1, at, CTX)
    assert session.collect_events() == []
    assert session.generation == 1


# --- end ----------------------------------------------------------------------------------


def test_end_records_session_ended_with_its_reason() -> None:
    session = given(rotated(1))

    assert session.end("logout", CTX) is True

    [event] = session.collect_events()
    assert isinstance(event, SessionEnded)
    assert event.reason == "logout"
    assert session.ended is True and session.end_reason == "logout"


@pytest.mark.parametrize("first", ["logout", "refresh_token_reuse"])
def test_end_is_idempotent(first: str) -> None:
    session = given(ended(first))

    assert session.end("logout", CTX) is False
    assert session.collect_events() == []
    assert session.end_reason == first


@pytest.mark.parametrize("reason", ["", "expired", "LOGOUT", "logout "])
def test_end_refuses_an_unknown_reason(reason: str) -> None:
    session = given()

    with pytest.raises(InvalidCommand) as raised:
        session.end(reason, CTX)

    assert raised.value.field == "reason"
    assert session.collect_events() == []
    assert session.ended is False
