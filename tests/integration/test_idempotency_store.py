"""Idempotency keys in PostgreSQL (infrastructure/idempotency.py): who wins a key, when a
retry takes it over, and when it keeps the key's generation (the ids the command derives
from it stay the same, so what an earlier attempt created is found, not made again).
Time is moved by ageing the rows, never waited for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest

from infrastructure.idempotency import IdempotencyStore, StoredResponse
from infrastructure.postgres import create_read_pool

WHO, KEY, BODY, OTHER = "u1@t1", "k-1", b"fingerprint-1", b"fingerprint-2"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[IdempotencyStore]:
    pool = create_read_pool(database_url, max_size=2)
    await pool.open()
    yield IdempotencyStore(pool, ttl=timedelta(hours=1))
    await pool.close()


def age(database_url: str, *, lease_by: float = 0, created_by: float = 0) -> None:
    """Move the key's lease and creation that many seconds into the past."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET"
            " lease_until = lease_until - make_interval(secs => %s),"
            " created_at = created_at - make_interval(secs => %s)",
            (lease_by, created_by),
        )


def lease_left(database_url: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM lease_until - now()) FROM idempotency_keys"
        ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


async def test_a_new_key_is_won_and_a_second_request_waits(store: IdempotencyStore) -> None:
    first = await store.reserve(WHO, KEY, BODY)
    assert first.won and not first.taken_over and first.generation is not None
    second = await store.reserve(WHO, KEY, BODY)
    assert not second.won and second.stored is None and not second.mismatch
    assert store.lease <= timedelta(seconds=5)


async def test_a_dead_requests_key_is_taken_over_with_its_generation(
    store: IdempotencyStore, database_url: str
) -> None:
    first = await store.reserve(WHO, KEY, BODY)
    age(database_url, lease_by=store.lease.total_seconds() + 1)  # its process died

    assert (await store.reserve(WHO, KEY, OTHER)).mismatch  # only the same request
    retry = await store.reserve(WHO, KEY, BODY)
    assert retry.won and retry.taken_over
    assert retry.generation == first.generation


async def test_a_running_request_renews_its_lease(
    store: IdempotencyStore, database_url: str
) -> None:
    first = await store.reserve(WHO, KEY, BODY)
    assert first.generation is not None
    age(database_url, lease_by=store.lease.total_seconds() - 0.5)
    await store.renew(WHO, KEY, first.generation)
    assert lease_left(database_url) > store.lease.total_seconds() - 0.5
    assert not (await store.reserve(WHO, KEY, BODY)).won


async def test_a_server_error_leaves_the_key_to_a_retry_of_the_same_request(
    store: IdempotencyStore,
) -> None:
    first = await store.reserve(WHO, KEY, BODY)
    await store.release(WHO, KEY, may_have_acted=True)

    assert (await store.reserve(WHO, KEY, OTHER)).mismatch
    retry = await store.reserve(WHO, KEY, BODY)
    assert retry.won and retry.taken_over and retry.generation == first.generation


async def test_a_client_error_frees_the_key_for_a_corrected_request(
    store: IdempotencyStore,
) -> None:
    first = await store.reserve(WHO, KEY, BODY)
    await store.release(WHO, KEY)
    corrected = await store.reserve(WHO, KEY, OTHER)
    assert corrected.won and not corrected.taken_over
    assert corrected.generation != first.generation


async def test_a_kept_response_is_replayed_until_the_key_expires(
    store: IdempotencyStore, database_url: str
) -> None:
    first = await store.reserve(WHO, KEY, BODY)
    assert first.generation is not None
    response = StoredResponse(202, [("location", "/api/v1/runs/1")], b"{}")
    await store.complete(WHO, KEY, response)
    await store.renew(WHO, KEY, first.generation)  # a late beat changes nothing

    assert (await store.reserve(WHO, KEY, BODY)).stored == response
    age(database_url, created_by=2 * 3600)
    later = await store.reserve(WHO, KEY, OTHER)
    assert later.won and not later.taken_over and later.generation != first.generation
