"""Who an append wakes (api/bootstrap.py `appended`): this process's relay directly, and
the leading relay elsewhere by a poke over NATS, never both for nothing; and only a
process that appends keeps a connection for pokes."""

from __future__ import annotations

from typing import Any, cast

from api.bootstrap import appended, pokes_needed


class FakeRelay:
    def __init__(self, leader: bool) -> None:
        self.is_leader = leader
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


class FakePokes:
    def __init__(self) -> None:
        self.poked = 0

    def poke(self) -> None:
        self.poked += 1


def on_append(relay: FakeRelay | None) -> tuple[Any, FakePokes]:
    pokes = FakePokes()
    return appended(cast(Any, relay), cast(Any, pokes)), pokes


def test_an_append_beside_the_leading_relay_wakes_it_and_pokes_no_one() -> None:
    relay = FakeRelay(leader=True)
    call, pokes = on_append(relay)
    call()
    assert (relay.woken, pokes.poked) == (1, 0)


def test_an_append_beside_a_standby_relay_pokes_the_leader_elsewhere() -> None:
    relay = FakeRelay(leader=False)
    call, pokes = on_append(relay)
    call()
    assert (relay.woken, pokes.poked) == (1, 1)


def test_an_append_in_a_process_without_a_relay_pokes() -> None:
    call, pokes = on_append(None)
    call()
    call()
    assert pokes.poked == 2


def test_a_standby_relay_without_pokes_is_woken_and_nothing_else() -> None:
    relay = FakeRelay(leader=False)
    appended(cast(Any, relay), None)()
    assert relay.woken == 1


def test_only_a_process_that_appends_keeps_a_connection_for_pokes() -> None:
    assert not pokes_needed({"relay"}, serves_http=False)
    assert not pokes_needed({"projector"}, serves_http=False)
    assert not pokes_needed({"relay", "projector"}, serves_http=False)
    assert pokes_needed(set(), serves_http=True)  # `norn api`
    for role in ("executor", "scheduler", "notifier"):
        assert pokes_needed({role}, serves_http=False)
