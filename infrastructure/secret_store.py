"""Tenant secrets' values at rest (README "Secrets", docs/architecture.md "Secrets"):
envelope encryption with AES-256-GCM.

- Each secret has a data key of its own (random, 256 bits), kept in `secret_keys`
  wrapped (encrypted) by the master key, whose id the row names. The master key is
  NORN_SECRET_KEY, else `<data dir>/secrets.key` (made on first start, 0600).
- Each value version is encrypted with its secret's data key in `secret_values`, with
  (secret id, version, value id) as associated data: a row copied onto another secret
  or version does not decrypt.
- Deleting a secret deletes its data key (and its rows): the ciphertexts in backups,
  replicas or dumps become unreadable (crypto-shredding); nothing the database holds
  decrypts them.
- Rotating the master key re-wraps the data keys only (`rewrap_all`); the values are not
  touched, which is the point of data keys.

The events of a secret are in the immutable event store and hold no value; these
tables are the only place values are, and they are mutable so that they can be shred.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import Connection
from psycopg_pool import ConnectionPool

from infrastructure.security import create_private_once, write_private

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_FILE = "secrets.key"
PREVIOUS_FILE = "secrets.previous"


def new_master_key() -> str:
    """A master key as NORN_SECRET_KEY takes it: 32 random bytes, base64url."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def parse_master_key(text: str) -> bytes:
    """The key's bytes; ValueError saying the expected format (never quoting the key)."""
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError(
            f"must be {KEY_BYTES} random bytes in base64url (43 characters), e.g. the output"
            ' of python -c "import secrets,base64;'
            ' print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
        )
    return raw


def master_key_id(key: bytes) -> str:
    return hashlib.sha256(b"norn-secret-master-kid:" + key).hexdigest()[:16]


class MasterKeys:
    """The current master key (wraps) and the previous ones still configured (unwrap
    rows not re-wrapped yet)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a master key is needed to keep secrets")
        parsed = [parse_master_key(key) for key in keys]
        self.current_id = master_key_id(parsed[0])
        self._current = parsed[0]
        self._keys = {master_key_id(key): key for key in parsed}

    def wrap(self, secret_id: UUID, data_key: bytes) -> tuple[str, bytes, bytes]:
        """(master key id, nonce, wrapped key); the secret id is the associated data."""
        nonce = os.urandom(NONCE_BYTES)
        return (
            self.current_id,
            nonce,
            AESGCM(self._current).encrypt(nonce, data_key, secret_id.bytes),
        )

    def rewrap(
        self, secret_id: UUID, key_id: str, nonce: bytes, wrapped: bytes
    ) -> tuple[str, bytes, bytes] | None:
        """A data key wrapped by any configured master key, wrapped by the current one
        instead; None when no configured key unwraps it."""
        data_key = self.unwrap(secret_id, key_id, nonce, wrapped)
        return None if data_key is None else self.wrap(secret_id, data_key)

    def unwrap(self, secret_id: UUID, key_id: str, nonce: bytes, wrapped: bytes) -> bytes | None:
        key = self._keys.get(key_id)
        if key is None:
            return None
        try:
            return AESGCM(key).decrypt(nonce, wrapped, secret_id.bytes)
        except InvalidTag:
            return None


def _associated(secret_id: UUID, version: int, value_id: UUID) -> bytes:
    return secret_id.bytes + version.to_bytes(8, "big") + value_id.bytes


def seal_value(
    data_key: bytes, secret_id: UUID, version: int, value_id: UUID, value: str
) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(data_key).encrypt(
        nonce, value.encode(), _associated(secret_id, version, value_id)
    )
    return nonce, sealed


def open_value(
    data_key: bytes, secret_id: UUID, version: int, value_id: UUID, nonce: bytes, sealed: bytes
) -> str | None:
    try:
        plain = AESGCM(data_key).decrypt(nonce, sealed, _associated(secret_id, version, value_id))
    except InvalidTag:
        return None
    return plain.decode()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)


class PostgresSecretValues:
    """application/ports.py `SecretValues` over `secret_keys` and `secret_values`
    (migration 0018)."""

    def __init__(self, pool: ConnectionPool, master: MasterKeys) -> None:
        self._pool = pool
        self._master = master

    def seal(
        self,
        secret_id: UUID,
        tenant_id: str,
        version: int,
        value_id: UUID,
        value: str,
        *,
        new_key: bool,
    ) -> bool:
        with self._pool.connection() as conn, conn.transaction():
            data_key = self._data_key(conn, secret_id, tenant_id, new_key)
            if data_key is None:
                return False
            nonce, sealed = seal_value(data_key, secret_id, version, value_id, value)
            conn.execute(
                "INSERT INTO secret_values (value_id, secret_id, version, nonce, ciphertext)"
                " VALUES (%s, %s, %s, %s, %s)",
                (value_id, secret_id, version, nonce, sealed),
            )
        return True

    def _data_key(
        self, conn: Connection[Any], secret_id: UUID, tenant_id: str, new_key: bool
    ) -> bytes | None:
        """The secret's data key, made (and wrapped) first if asked and it has none (two
        creates racing both end up with the one inserted first). A version of an
        existing secret never makes one: had a delete destroyed it meanwhile, a new key
        would make that version readable after the delete."""
        if new_key:
            key_id, nonce, wrapped = self._master.wrap(secret_id, new_data_key())
            conn.execute(
                "INSERT INTO secret_keys (secret_id, tenant_id, key_id, nonce, wrapped_key)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (secret_id) DO NOTHING",
                (secret_id, tenant_id, key_id, nonce, wrapped),
            )
        # FOR SHARE: a delete's destroy waits for this version's row to be written (and
        # then removes it), never leaves it behind under a key it has deleted.
        row = conn.execute(
            "SELECT key_id, nonce, wrapped_key FROM secret_keys WHERE secret_id = %s FOR SHARE",
            (secret_id,),
        ).fetchone()
        if row is None:
            return None
        return self._master.unwrap(secret_id, row[0], bytes(row[1]), bytes(row[2]))

    def open(self, secret_id: UUID, version: int, value_id: UUID) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT k.key_id, k.nonce, k.wrapped_key, v.nonce, v.ciphertext"
                " FROM secret_values v JOIN secret_keys k ON k.secret_id = v.secret_id"
                " WHERE v.value_id = %s AND v.secret_id = %s AND v.version = %s",
                (value_id, secret_id, version),
            ).fetchone()
        if row is None:
            return None
        data_key = self._master.unwrap(secret_id, row[0], bytes(row[1]), bytes(row[2]))
        if data_key is None:
            return None
        return open_value(data_key, secret_id, version, value_id, bytes(row[3]), bytes(row[4]))

    def destroy(self, secret_id: UUID) -> None:
        """The key first: once it is gone, whatever copy of the ciphertexts survives is
        noise. The rows are dropped too, as they can no longer serve."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM secret_keys WHERE secret_id = %s", (secret_id,))
            conn.execute("DELETE FROM secret_values WHERE secret_id = %s", (secret_id,))


def rewrap_all(pool: ConnectionPool, master: MasterKeys, batch: int = 500) -> tuple[int, int]:
    """Re-wrap every data key not wrapped by the current master key yet: (re-wrapped,
    unreadable: wrapped by a key no longer configured, left as they are). Each row in
    its own short transaction (locked, re-read), so a rotation can be interrupted and
    run again, and writers are never held long."""
    done = unreadable = 0
    skipped: list[UUID] = []
    while True:
        with pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT secret_id, key_id, nonce, wrapped_key FROM secret_keys"
                " WHERE key_id <> %s AND NOT (secret_id = ANY(%s))"
                " ORDER BY secret_id LIMIT %s FOR UPDATE SKIP LOCKED",
                (master.current_id, skipped, batch),
            ).fetchall()
            if not rows:
                return done, unreadable
            for secret_id, key_id, nonce, wrapped in rows:
                rewrapped = master.rewrap(secret_id, key_id, bytes(nonce), bytes(wrapped))
                if rewrapped is None:
                    unreadable += 1
                    skipped.append(secret_id)
                    continue
                new_id, new_nonce, new_wrapped = rewrapped
                conn.execute(
                    "UPDATE secret_keys SET key_id = %s, nonce = %s, wrapped_key = %s"
                    " WHERE secret_id = %s",
                    (new_id, new_nonce, new_wrapped, secret_id),
                )
                done += 1


def data_dir_master_keys(data_dir: Path) -> list[str]:
    """The data dir's master key (made on first start, 0600), then the previous one
    kept by the last rotation."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        create_private_once(path, new_master_key() + "\n")
    previous = data_dir / PREVIOUS_FILE
    older = previous.read_text().split() if previous.exists() else []
    return [path.read_text().strip(), *older]


def rotate_data_dir_master_key(data_dir: Path) -> list[str]:
    """A new master key in the data dir, every key it had kept as previous ones (rows not
    re-wrapped yet stay readable, however often a rotation was interrupted): the keys to
    re-wrap with. The previous file is written first: a crash between the two writes
    loses no key."""
    keys = data_dir_master_keys(data_dir)
    fresh = new_master_key()
    write_private(data_dir / PREVIOUS_FILE, "\n".join(keys) + "\n")
    write_private(data_dir / KEY_FILE, fresh + "\n")
    return [fresh, *keys]


def keep_one_previous_master_key(data_dir: Path) -> None:
    """After a rotation re-wrapped every data key: only the key it replaced is kept,
    for data keys that processes not restarted yet still wrap with it."""
    keys = data_dir_master_keys(data_dir)
    write_private(data_dir / PREVIOUS_FILE, "\n".join(keys[1:2]) + "\n")
