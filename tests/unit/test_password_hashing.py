"""Argon2PasswordHasher: argon2id at the cost it is given (the library's default unless
NORN_PASSWORD_HASH_COST says otherwise), and a verify that follows the cost stored in
the hash, so hashes made at an older cost keep working after the setting changes."""

from __future__ import annotations

from infrastructure.security import Argon2PasswordHasher


def test_the_default_cost_is_rfc_9106s_low_memory_profile() -> None:
    stored = Argon2PasswordHasher().hash("a-long-passphrase")

    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_a_hash_carries_the_cost_it_was_made_with_and_any_hasher_verifies_it() -> None:
    cheap, default = Argon2PasswordHasher(8, 1, 1), Argon2PasswordHasher()

    stored = cheap.hash("a-long-passphrase")

    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert default.verify(stored, "a-long-passphrase")
    assert not default.verify(stored, "a-wrong-passphrase")
    assert not cheap.verify("not-a-hash", "a-long-passphrase")
