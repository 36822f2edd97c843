"""Counting the appends an event store refused for a version already taken (a lost race),
by wrapping its recorder's insert: for tests that assert processes did not race."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import IntegrityError


class RefusedAppends:
    def __init__(self, recorder: Any) -> None:
        self.count = 0
        insert = recorder.insert_events

        def counted(stored_events: Any, **kwargs: Any) -> Any:
            try:
                return insert(stored_events, **kwargs)
            except IntegrityError:
                self.count += 1
                raise

        recorder.insert_events = counted
