"""Password hashing (argon2id, memory-hard) and JWT access/refresh tokens (HS256 pinned,
issuer/audience/expiry required and checked, signing keys rotated by key id)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from uuid import uuid4

import jwt
from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from application.errors import AuthenticationFailed
from application.ports import TokenClaims

ALGORITHM = "HS256"
VERIFIED_CACHE_SIZE = 10_000
"""Tokens whose verification a TokenService keeps (one entry is ~1 KB)."""


class Argon2PasswordHasher:
    """argon2id; the default cost is the library's (RFC 9106's low-memory profile:
    64 MiB, 3 iterations, 4 lanes). A verify uses the cost stored in the hash."""

    def __init__(self, memory_kib: int = 65536, iterations: int = 3, lanes: int = 4) -> None:
        self._hasher = Argon2Hasher(memory_cost=memory_kib, time_cost=iterations, parallelism=lanes)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def key_id(secret: str) -> str:
    """A JWT's `kid` for a signing key: names the key without revealing it."""
    return hashlib.sha256(b"norn-jwt-kid:" + secret.encode()).hexdigest()[:16]


class TokenService:
    """Signs with the first key; verifies with whichever key the token's `kid` names.
    Rotation: put a new key first and keep the old ones until the tokens they signed
    have expired (NORN_JWT_PREVIOUS_SECRETS, or `norn jwt rotate` on the embedded
    default)."""

    def __init__(
        self,
        secrets_: Sequence[str],
        *,
        issuer: str,
        audience: str,
        access_ttl: int,
        refresh_ttl: int,
    ) -> None:
        if not secrets_:
            raise ValueError("at least one JWT signing key is required")
        for secret in secrets_:
            if len(secret.encode()) < 32:
                raise ValueError("every JWT secret must be at least 32 bytes")
        self._keys = {key_id(secret): secret for secret in secrets_}
        self._signing_kid = key_id(secrets_[0])
        self._issuer = issuer
        self._audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._verified: dict[tuple[str, str], TokenClaims] = {}

    def derived_key(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. the dashboard's CSRF tokens) derived from the signing
        key: never the signing key itself, and different for every purpose."""
        secret = self._keys[self._signing_kid].encode()
        return hmac.new(secret, f"norn-derived:{purpose}".encode(), hashlib.sha256).digest()

    def issue(
        self,
        subject: str,
        token_type: str,
        *,
        session_id: str,
        username: str,
        tenant_id: str | None,
        generation: int = 0,
    ) -> str:
        now = int(time.time())
        ttl = self.access_ttl if token_type == "access" else self.refresh_ttl
        claims: dict[str, object] = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid4().hex,
            "typ": token_type,
            "sid": session_id,
            "name": username,
            "tid": tenant_id,
        }
        if token_type == "refresh":
            claims["gen"] = generation
        return jwt.encode(
            claims,
            self._keys[self._signing_kid],
            algorithm=ALGORITHM,
            headers={"kid": self._signing_kid},
        )

    def verify(self, token: str, token_type: str = "access") -> TokenClaims:
        # A token this process has verified is the same bytes under the same keys: its
        # signature and claims stay valid, only the clock moves. Verifying costs more
        # than the rest of a cached GET, so the answer is kept and only the times are
        # checked again. Keys change only with a restart (rotate_data_dir_key).
        cached = self._verified.get((token, token_type))
        if cached is not None:
            if cached.not_before <= time.time() < cached.expires_at:
                return cached
            raise AuthenticationFailed("invalid or expired token")
        claims = self._verify(token, token_type)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # cheaper than LRU bookkeeping; refills in a moment
        self._verified[(token, token_type)] = claims
        return claims

    def _verify(self, token: str, token_type: str) -> TokenClaims:
        invalid = AuthenticationFailed("invalid or expired token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid from None
        # Pinned: the header may not choose the algorithm, and must name a known key.
        key = self._keys.get(str(header.get("kid")))
        if header.get("alg") != ALGORITHM or key is None:
            raise invalid
        required = ["exp", "iat", "nbf", "sub", "iss", "aud", "jti", "typ", "sid"]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": required},
            )
        except jwt.PyJWTError:
            raise invalid from None
        generation = claims.get("gen", 0)
        if (
            claims.get("typ") != token_type
            or not isinstance(claims.get("sid"), str)
            or not isinstance(claims.get("sub"), str)
            or not isinstance(generation, int)
            or (token_type == "refresh" and "gen" not in claims)
        ):
            raise invalid
        return TokenClaims(
            subject=claims["sub"],
            token_type=claims["typ"],
            token_id=str(claims["jti"]),
            session_id=claims["sid"],
            expires_at=int(claims["exp"]),
            not_before=int(claims["nbf"]),
            generation=generation,
            tenant_id=claims.get("tid") if isinstance(claims.get("tid"), str) else None,
        )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), replacing it atomically."""
    tmp = path.with_suffix(".tmp")
    # A file left behind by a crash keeps its own mode if merely reopened: start afresh.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def create_private_once(path: Path, text: str) -> None:
    """Write a new private file (0600), unless another process of the data dir wrote it
    first (two processes starting at once): its content wins, so both use the same."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.link(tmp, path)  # fails if the file exists: never replaces another's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secret(data_dir: Path) -> str:
    """The embedded default's signing key: generated once, kept (0600) in the data dir so
    tokens survive a restart."""
    path = data_dir / "jwt.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        create_private_once(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


def data_dir_keys(data_dir: Path) -> list[str]:
    """The data dir's signing key first, then the previous ones still accepted."""
    previous = data_dir / "jwt.previous"
    older = previous.read_text().split() if previous.exists() else []
    return [load_or_create_secret(data_dir), *older]


def rotate_data_dir_key(data_dir: Path, keep: int = 2) -> str:
    """Make a new signing key in the data dir; the current one (and up to `keep` older
    ones) keep verifying tokens they signed. Returns the new key's id. Running API
    processes pick it up when restarted."""
    keys = data_dir_keys(data_dir)
    secret = secrets.token_urlsafe(48)
    write_private(data_dir / "jwt.previous", "\n".join(keys[: keep + 1]) + "\n")
    write_private(data_dir / "jwt.key", secret)
    return key_id(secret)
