"""Webhook signing secrets at rest: AES-256-GCM under a key derived from the server's
secret (the JWT signing key: NORN_JWT_SECRET, or the data dir's key), the webhook id as
associated data.

A signing secret cannot be hashed (the notifier needs it to sign), so it is encrypted;
a database dump alone does not reveal it. Each row names the server key it was
encrypted under (`key_id`), so rotating the JWT secret keeps old secrets readable while
the previous key is still configured (NORN_JWT_PREVIOUS_SECRETS); a secret whose key is
gone reads as None and its deliveries fail with that said.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import ConnectionPool

NONCE_BYTES = 12


def _derive(server_secret: str) -> tuple[str, bytes]:
    """(key id, AES key): a key of its own purpose, not the JWT key itself."""
    key = hashlib.sha256(b"norn-webhook-secrets:v1:" + server_secret.encode()).digest()
    return hashlib.sha256(b"norn-webhook-kid:" + key).hexdigest()[:16], key


class SecretCipher:
    """Encrypts with the first server secret; decrypts with whichever the row names."""

    def __init__(self, server_secrets: Sequence[str]) -> None:
        if not server_secrets:
            raise ValueError("a server secret is needed to keep webhook secrets")
        derived = [_derive(secret) for secret in server_secrets]
        self._current = derived[0]
        self._keys = dict(derived)

    def seal(self, webhook_id: UUID, secret: str) -> tuple[str, bytes, bytes]:
        kid, key = self._current
        nonce = os.urandom(NONCE_BYTES)
        return kid, nonce, AESGCM(key).encrypt(nonce, secret.encode(), webhook_id.bytes)

    def open(self, webhook_id: UUID, kid: str, nonce: bytes, ciphertext: bytes) -> str | None:
        key = self._keys.get(kid)
        if key is None:
            return None
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, webhook_id.bytes).decode()
        except InvalidTag:
            return None


class PostgresWebhookSecrets:
    """application/webhooks.py `WebhookSecrets` over the webhook_secrets table."""

    def __init__(self, pool: ConnectionPool, cipher: SecretCipher) -> None:
        self._pool = pool
        self._cipher = cipher

    def put(self, webhook_id: UUID, tenant_id: str, secret: str) -> None:
        kid, nonce, sealed = self._cipher.seal(webhook_id, secret)
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO webhook_secrets (webhook_id, tenant_id, key_id, nonce, ciphertext)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (webhook_id) DO UPDATE SET"
                " key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,"
                " ciphertext = EXCLUDED.ciphertext",
                (webhook_id, tenant_id, kid, nonce, sealed),
            )

    def get(self, webhook_id: UUID) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT key_id, nonce, ciphertext FROM webhook_secrets WHERE webhook_id = %s",
                (webhook_id,),
            ).fetchone()
        if row is None:
            return None
        return self._cipher.open(webhook_id, row[0], bytes(row[1]), bytes(row[2]))
