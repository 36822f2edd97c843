"""API key material: making a new key, reading one presented by a client, and hashing
and checking its secret.

A key reads `nrn_<prefix>_<secret>`: `nrn_` tells it apart from a JWT (and lets secret
scanners recognise it), the prefix is public (shown in lists, it names the key), the
secret is 32 random bytes, url-safe base64.

Hashing is one SHA-256 over prefix and secret, on purpose not argon2: a slow hash
protects secrets a person chose, which are guessable; a 256-bit random secret cannot be
guessed at any hash speed, so a slow hash would only add its cost to every API request
(and invite a denial of service). Binding the prefix into the hash means a hash copied
onto another key's record does not verify. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

KEY_PREFIX = "nrn_"
PREFIX_LENGTH = 10
SECRET_BYTES = 32
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
# token_urlsafe(32) is 43 characters; the prefix has no '_', so the split is unambiguous.
_KEY = re.compile(rf"^{KEY_PREFIX}([a-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9_-]{{43}})$")
_SCHEME = "sha256"


class ApiKeySecrets:
    def new_key(self) -> tuple[str, str]:
        """A fresh (prefix, secret)."""
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
        return prefix, secrets.token_urlsafe(SECRET_BYTES)

    def format(self, prefix: str, secret: str) -> str:
        return f"{KEY_PREFIX}{prefix}_{secret}"

    def parse(self, key: str) -> tuple[str, str] | None:
        """(prefix, secret) of a well-formed key, else None."""
        match = _KEY.fullmatch(key.strip())
        return (match.group(1), match.group(2)) if match else None

    def hash(self, prefix: str, secret: str) -> str:
        digest = hashlib.sha256(f"{prefix}:{secret}".encode()).hexdigest()
        return f"{_SCHEME}:{digest}"

    def verify(self, secret_hash: str, prefix: str, secret: str) -> bool:
        return hmac.compare_digest(secret_hash.encode(), self.hash(prefix, secret).encode())
