"""Password hashing (argon2id, memory-hard) and JWT access/refresh tokens (HS256 pinned,
issuer/audience/expiry required and checked)."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import jwt
from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from application.errors import AuthenticationFailed

ALGORITHM = "HS256"


class Argon2PasswordHasher:
    def __init__(self) -> None:
        self._hasher = Argon2Hasher()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    token_type: str
    token_id: str
    expires_at: int
    username: str
    tenant_id: str | None
    roles: tuple[str, ...]


class TokenService:
    def __init__(
        self, secret: str, *, issuer: str, audience: str, access_ttl: int, refresh_ttl: int
    ) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("JWT secret must be at least 32 bytes")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        # Key id: lets a later key rotation tell which key signed a token.
        self._kid = "k1"

    def issue(
        self,
        subject: str,
        token_type: str,
        *,
        username: str,
        tenant_id: str | None,
        roles: tuple[str, ...],
    ) -> str:
        now = int(time.time())
        ttl = self.access_ttl if token_type == "access" else self.refresh_ttl
        claims = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid4().hex,
            "typ": token_type,
            "name": username,
            "tid": tenant_id,
            "roles": list(roles),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM, headers={"kid": self._kid})

    def verify(self, token: str, token_type: str = "access") -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud", "jti", "typ"]},
            )
        except jwt.PyJWTError:
            raise AuthenticationFailed("invalid or expired token") from None
        roles = claims.get("roles")
        if claims.get("typ") != token_type or not isinstance(roles, list):
            raise AuthenticationFailed("invalid or expired token")
        return TokenClaims(
            subject=claims["sub"],
            token_type=claims["typ"],
            token_id=claims["jti"],
            expires_at=int(claims["exp"]),
            username=str(claims.get("name", "")),
            tenant_id=claims.get("tid"),
            roles=tuple(str(r) for r in roles),
        )


def load_or_create_secret(data_dir: Path) -> str:
    """The embedded default's signing key: generated once, kept (0600) in the data dir so
    tokens survive a restart."""
    path = data_dir / "jwt.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret
