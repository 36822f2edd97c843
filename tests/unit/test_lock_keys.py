"""One key scheme for every advisory lock (infrastructure/leadership.py)."""

from __future__ import annotations

from pathlib import Path

from infrastructure.leadership import lock_key
from infrastructure.recorder import append_lock_key


def test_keys_are_stable_signed_64_bit_integers_apart_by_purpose_and_scope() -> None:
    keys = {lock_key(p, s) for p in ("relay", "projection") for s in ("a", "b")}
    assert len(keys) == 4
    assert all(-(2**63) <= k < 2**63 for k in keys)
    # The same in every process and release (Python's hash() is not): the keys the
    # projection runners and executor maintenance used before the scheme was shared.
    assert lock_key("projection", "pipelines") == -3550767652809152074
    assert lock_key("executor", "norn") == -3374256617279926992


def test_the_append_lock_is_the_one_written_into_its_migration() -> None:
    """Migration 0010 has the key of appends to norn_events written out; changing the
    scheme would make old functions and new recorders disagree."""
    migration = Path(__file__).parents[2] / "migrations" / "0010_lock_free_appends.sql"
    assert append_lock_key("norn_events") == lock_key("append", "norn_events")
    assert f"pg_advisory_lock({append_lock_key('norn_events')})" in migration.read_text()
