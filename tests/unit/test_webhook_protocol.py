"""What a delivery is on the wire and when it is retried (infrastructure/
webhook_protocol.py), and how secrets are sealed at rest (infrastructure/
webhook_secrets.py)."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid

import msgspec
import pytest

from infrastructure.webhook_protocol import (
    PING_TYPE,
    RetryPolicy,
    delivery_id,
    headers,
    matches,
    ping_body,
    signature,
    verify,
)
from infrastructure.webhook_secrets import SecretCipher

SECRET = "whsec-test-secret-0123456789"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"e1"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1700000000, body) == f"sha256={expected}"
    assert verify(SECRET, 1700000000, body, f"sha256={expected}")
    assert not verify(SECRET, 1700000001, body, f"sha256={expected}")  # another time
    assert not verify(SECRET, 1700000000, body + b" ", f"sha256={expected}")  # another body
    assert not verify("other-secret-0123456789", 1700000000, body, f"sha256={expected}")


def test_headers_carry_timestamp_signature_and_delivery_id() -> None:
    delivery = uuid.uuid4()
    sent = headers(SECRET, delivery, "norn.run.succeeded.v1", b"{}", 1700000000.7)
    assert sent["X-Norn-Timestamp"] == "1700000000"
    assert sent["X-Norn-Delivery"] == str(delivery)
    assert verify(SECRET, 1700000000, b"{}", sent["X-Norn-Signature"])


def test_a_delivery_id_is_one_per_webhook_and_event() -> None:
    webhook, other = uuid.uuid4(), uuid.uuid4()
    assert delivery_id(webhook, "e1") == delivery_id(str(webhook), "e1")
    assert (
        len({delivery_id(webhook, "e1"), delivery_id(webhook, "e2"), delivery_id(other, "e1")}) == 3
    )


@pytest.mark.parametrize(
    ("globs", "event_type", "expected"),
    [
        (("norn.run.*",), "norn.run.succeeded.v1", True),
        (("norn.run.*",), "norn.runs.x.v1", False),
        (("norn.*.deleted.v1",), "norn.pipeline.deleted.v1", True),
        (("norn.run.succeeded.v1",), "norn.run.succeeded.v1", True),
        (("NORN.run.*",), "norn.run.succeeded.v1", False),  # case-sensitive, as the feed
        (("norn.run.[sf]*",), "norn.run.failed.v1", True),
        (("norn.job.*", "norn.run.*"), "norn.run.queued.v1", True),
    ],
)
def test_globs_match_event_types(globs: tuple[str, ...], event_type: str, expected: bool) -> None:
    assert matches(globs, event_type) is expected


def test_backoff_is_full_jitter_under_a_doubling_ceiling_that_is_capped() -> None:
    policy = RetryPolicy(base=10.0, cap=3600.0)
    rng = random.Random(7)
    for attempts, ceiling in ((1, 10.0), (2, 20.0), (3, 40.0), (9, 2560.0), (10, 3600.0)):
        delays = [policy.delay(attempts, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # the whole range is used: full jitter
    assert policy.delay(10_000, rng) <= 3600.0  # no overflow however long it fails


def test_retries_last_a_day_and_20_failures_disable_by_default() -> None:
    policy = RetryPolicy()
    assert (policy.window, policy.disable_after, policy.cap) == (86_400.0, 20, 3_600.0)


def test_a_ping_is_cloud_event_shaped_and_unique() -> None:
    webhook = uuid.uuid4()
    first = msgspec.json.decode(ping_body(webhook, "t1"))
    second = msgspec.json.decode(ping_body(webhook, "t1"))
    assert first["type"] == PING_TYPE and first["specversion"] == "1.0"
    assert first["subject"] == str(webhook) and first["tenant"] == "t1"
    assert first["id"] != second["id"]


def test_sealed_secrets_open_only_for_their_webhook_and_under_a_known_key() -> None:
    webhook = uuid.uuid4()
    cipher = SecretCipher(["server-secret-" + "k" * 32])
    kid, nonce, sealed = cipher.seal(webhook, SECRET)
    assert SECRET.encode() not in sealed
    assert cipher.open(webhook, kid, nonce, sealed) == SECRET
    assert cipher.open(uuid.uuid4(), kid, nonce, sealed) is None  # copied onto another
    rotated = SecretCipher(["new-server-secret-" + "n" * 32, "server-secret-" + "k" * 32])
    assert rotated.open(webhook, kid, nonce, sealed) == SECRET  # previous key still read
    assert rotated.seal(webhook, SECRET)[0] != kid  # new secrets under the new key
    assert SecretCipher(["another-" + "x" * 32]).open(webhook, kid, nonce, sealed) is None


def test_the_readme_verification_snippet_accepts_a_delivery_and_refuses_a_forgery() -> None:
    import re
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [snippet] = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.S)
        if "def verified" in block
    ]
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the README's own code, checked here
    body = b'{"id":"e1","type":"norn.run.succeeded.v1"}'
    sent = headers(SECRET, uuid.uuid4(), "norn.run.succeeded.v1", body, time.time())
    assert namespace["verified"](SECRET, sent, body)
    assert not namespace["verified"](SECRET, sent, body + b" ")
    assert not namespace["verified"]("another-secret-0123456789", sent, body)
    stale = headers(SECRET, uuid.uuid4(), "norn.run.succeeded.v1", body, time.time() - 3600)
    assert not namespace["verified"](SECRET, stale, body)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:8080/x", "loopback"),
        ("http://10.1.2.3/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("https://93.184.215.14/x", None),
        ("https://" + "a" * 70 + ".example/x", "cannot resolve"),  # not a valid IDNA label
    ],
)
def test_the_creation_guard_refuses_what_is_not_public(url: str, refused: str | None) -> None:
    from infrastructure.notifier_role import url_problem

    problem = url_problem(allow_private=False)(url)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem
    assert url_problem(allow_private=True)(url) is None
