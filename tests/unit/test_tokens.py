"""TokenService (HS256 pinned, keys named by `kid`, several verify and the first signs)
and the data directory's signing keys with their rotation. No network, no database:
the data-dir tests touch only pytest's temporary directory."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

import api.bootstrap
from api.cli import main
from application.errors import AuthenticationFailed
from infrastructure.security import (
    TokenService,
    data_dir_keys,
    key_id,
    load_or_create_secret,
    rotate_data_dir_key,
)

KEY_A = "key-a-that-is-long-enough-for-hs256-0123456789abcdef"
KEY_B = "key-b-that-is-long-enough-for-hs256-0123456789abcdef"
KEY_C = "key-c-that-is-long-enough-for-hs256-0123456789abcdef"
IDENTITY: dict[str, Any] = {"session_id": "s-1", "username": "alice", "tenant_id": "t-1"}


def service(*keys: str, access_ttl: int = 900, refresh_ttl: int = 3600) -> TokenService:
    return TokenService(
        list(keys),
        issuer="norn",
        audience="norn-api",
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
    )


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def resign(token: str, key: str, *, algorithm: str = "HS256", **header: Any) -> str:
    """The token's claims (changed or not) signed again with `key`."""
    return jwt.encode(claims_of(token), key, algorithm=algorithm, headers=header or None)


def refused(tokens: TokenService, token: str, token_type: str = "access") -> None:  # noqa: S107
    with pytest.raises(AuthenticationFailed, match="invalid or expired token"):
        tokens.verify(token, token_type)


# --- issue and verify ---------------------------------------------------------------------


def test_an_access_token_verifies_with_its_subject_session_and_type() -> None:
    tokens = service(KEY_A)

    token = tokens.issue("user-1", "access", **IDENTITY)
    claims = tokens.verify(token, "access")

    assert (claims.subject, claims.session_id, claims.token_type) == ("user-1", "s-1", "access")
    assert claims.generation == 0
    assert claims.token_id
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": key_id(KEY_A)}
    raw = claims_of(token)
    assert (raw["iss"], raw["aud"], raw["name"], raw["tid"]) == ("norn", "norn-api", "alice", "t-1")
    assert raw["exp"] - raw["iat"] == 900
    assert claims.expires_at == raw["exp"]
    assert "gen" not in raw


def test_a_refresh_token_carries_its_generation_and_the_refresh_lifetime() -> None:
    tokens = service(KEY_A)

    token = tokens.issue("user-1", "refresh", generation=7, **IDENTITY)
    claims = tokens.verify(token, "refresh")

    assert (claims.token_type, claims.generation, claims.session_id) == ("refresh", 7, "s-1")
    raw = claims_of(token)
    assert raw["exp"] - raw["iat"] == 3600


def test_every_token_has_its_own_id() -> None:
    tokens = service(KEY_A)

    ids = {tokens.verify(tokens.issue("u", "access", **IDENTITY)).token_id for _ in range(5)}

    assert len(ids) == 5


def test_a_refresh_token_is_not_an_access_token_and_vice_versa() -> None:
    tokens = service(KEY_A)
    access = tokens.issue("user-1", "access", **IDENTITY)
    refresh = tokens.issue("user-1", "refresh", generation=1, **IDENTITY)

    refused(tokens, refresh, "access")
    refused(tokens, access, "refresh")


def test_a_refresh_token_without_a_generation_is_refused() -> None:
    tokens = service(KEY_A)
    refresh = tokens.issue("user-1", "refresh", generation=1, **IDENTITY)
    claims = {k: v for k, v in claims_of(refresh).items() if k != "gen"}

    refused(tokens, jwt.encode(claims, KEY_A, headers={"kid": key_id(KEY_A)}), "refresh")


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"exp": int(time.time()) - 1},
        {"nbf": int(time.time()) + 3600},
        {"sid": 42},
        {"typ": "id"},
        {"gen": "1"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_wrong_claims_are_refused_even_when_properly_signed(change: dict[str, Any]) -> None:
    tokens = service(KEY_A)
    refresh = tokens.issue("user-1", "refresh", generation=1, **IDENTITY)
    claims = {**claims_of(refresh), **change}

    refused(tokens, jwt.encode(claims, KEY_A, headers={"kid": key_id(KEY_A)}), "refresh")


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "sub", "iss", "aud", "jti", "typ", "sid"])
def test_a_token_missing_a_required_claim_is_refused(missing: str) -> None:
    tokens = service(KEY_A)
    token = tokens.issue("user-1", "access", **IDENTITY)
    claims = {k: v for k, v in claims_of(token).items() if k != missing}

    refused(tokens, jwt.encode(claims, KEY_A, headers={"kid": key_id(KEY_A)}))


def test_an_expired_token_is_refused() -> None:
    tokens = service(KEY_A, access_ttl=-1)

    refused(tokens, tokens.issue("user-1", "access", **IDENTITY))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "Ω"])
def test_garbage_is_refused(garbage: str) -> None:
    refused(service(KEY_A), garbage)


def test_a_tampered_payload_is_refused() -> None:
    tokens = service(KEY_A)
    head, _, signature = tokens.issue("user-1", "access", **IDENTITY).split(".")
    _, other_payload, _ = tokens.issue("user-2", "access", **IDENTITY).split(".")

    refused(tokens, f"{head}.{other_payload}.{signature}")


# --- algorithm pinning and key ids ----------------------------------------------------------


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_another_hmac_algorithm_with_the_right_key_is_refused(algorithm: str) -> None:
    tokens = service(KEY_A)
    token = tokens.issue("user-1", "access", **IDENTITY)

    refused(tokens, resign(token, KEY_A, algorithm=algorithm, kid=key_id(KEY_A)))


def test_alg_none_is_refused() -> None:
    tokens = service(KEY_A)
    token = tokens.issue("user-1", "access", **IDENTITY)
    unsigned = jwt.encode(claims_of(token), None, algorithm="none", headers={"kid": key_id(KEY_A)})

    refused(tokens, unsigned)
    refused(tokens, unsigned.rsplit(".", 1)[0] + ".")


def test_a_missing_or_unknown_kid_is_refused() -> None:
    tokens = service(KEY_A)
    token = tokens.issue("user-1", "access", **IDENTITY)

    assert tokens.verify(resign(token, KEY_A, kid=key_id(KEY_A))).subject == "user-1"
    refused(tokens, resign(token, KEY_A))
    refused(tokens, resign(token, KEY_A, kid="0123456789abcdef"))
    refused(tokens, resign(token, KEY_A, kid=""))


def test_a_token_signed_by_one_key_under_another_keys_kid_is_refused() -> None:
    tokens = service(KEY_A, KEY_B)
    token = tokens.issue("user-1", "access", **IDENTITY)

    refused(tokens, resign(token, KEY_B, kid=key_id(KEY_A)))
    refused(tokens, resign(token, KEY_C, kid=key_id(KEY_C)))


def test_the_kid_names_the_key_without_revealing_it() -> None:
    assert key_id(KEY_A) == key_id(KEY_A)
    assert key_id(KEY_A) != key_id(KEY_B)
    assert len(key_id(KEY_A)) == 16
    assert key_id(KEY_A) not in KEY_A


def test_keys_shorter_than_32_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        service(KEY_A, "short")
    with pytest.raises(ValueError, match="at least one"):
        service()


# --- rotation by kid ----------------------------------------------------------------------


def test_the_first_key_signs_and_a_previous_key_still_verifies_until_it_is_dropped() -> None:
    before = service(KEY_A)
    old_access = before.issue("user-1", "access", **IDENTITY)
    old_refresh = before.issue("user-1", "refresh", generation=2, **IDENTITY)

    rotated = service(KEY_B, KEY_A)
    new_access = rotated.issue("user-1", "access", **IDENTITY)

    assert jwt.get_unverified_header(new_access)["kid"] == key_id(KEY_B)
    assert rotated.verify(old_access).subject == "user-1"
    assert rotated.verify(old_refresh, "refresh").generation == 2
    assert rotated.verify(new_access).subject == "user-1"
    refused(before, new_access)  # a process not yet restarted does not know KEY_B

    dropped = service(KEY_B)
    refused(dropped, old_access)
    refused(dropped, old_refresh, "refresh")
    assert dropped.verify(new_access).subject == "user-1"


# --- keys in the data directory -------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_key_is_created_once_and_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = load_or_create_secret(data_dir)

    assert len(first.encode()) >= 32
    assert load_or_create_secret(data_dir) == first
    assert data_dir_keys(data_dir) == [first]
    assert mode(data_dir / "jwt.key") == 0o600


def test_rotate_keeps_the_current_key_as_previous_in_private_files(tmp_path: Path) -> None:
    [current] = data_dir_keys(tmp_path)

    new_kid = rotate_data_dir_key(tmp_path)

    keys = data_dir_keys(tmp_path)
    assert keys[1:] == [current]
    assert key_id(keys[0]) == new_kid != key_id(current)
    assert mode(tmp_path / "jwt.key") == 0o600
    assert mode(tmp_path / "jwt.previous") == 0o600
    assert not list(tmp_path.glob("*.tmp"))


def test_tokens_signed_before_a_data_dir_rotation_still_verify(tmp_path: Path) -> None:
    before = service(*data_dir_keys(tmp_path))
    token = before.issue("user-1", "refresh", generation=1, **IDENTITY)

    rotate_data_dir_key(tmp_path)
    after = service(*data_dir_keys(tmp_path))

    assert after.verify(token, "refresh").subject == "user-1"
    assert (
        jwt.get_unverified_header(after.issue("u", "access", **IDENTITY))["kid"]
        != (jwt.get_unverified_header(token)["kid"])
    )


def test_rotation_bounds_how_many_previous_keys_are_kept(tmp_path: Path) -> None:
    history = [data_dir_keys(tmp_path)[0]]
    for _ in range(5):
        rotate_data_dir_key(tmp_path, keep=2)
        history.insert(0, data_dir_keys(tmp_path)[0])

    keys = data_dir_keys(tmp_path)

    # The signing key, the one it replaced, and `keep` older ones: the newest first.
    assert keys == history[:4]
    assert len(set(keys)) == 4
    oldest = service(history[-1])
    token = oldest.issue("user-1", "access", **IDENTITY)
    refused(service(*keys), token)


def test_a_leftover_temporary_file_cannot_make_a_key_readable(tmp_path: Path) -> None:
    # A crash between creating and renaming the temporary file leaves it behind; the
    # next write must not inherit its looser permissions.
    data_dir_keys(tmp_path)
    leftover = tmp_path / "jwt.tmp"
    leftover.write_text("junk")
    leftover.chmod(0o644)

    rotate_data_dir_key(tmp_path)

    assert mode(tmp_path / "jwt.key") == 0o600
    assert mode(tmp_path / "jwt.previous") == 0o600


# --- norn jwt rotate --------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean NORN_* environment with a temporary data dir, where starting a database
    or NATS server fails the test: rotating keys must only touch files."""
    for name in list(os.environ):
        if name.startswith("NORN_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("NORN_DATA_DIR", str(data_dir))

    def no_servers(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("norn jwt rotate started servers")

    monkeypatch.setattr(api.bootstrap, "start_servers", no_servers)
    monkeypatch.setattr(api.bootstrap, "build_container", no_servers)
    return data_dir


def test_norn_jwt_rotate_makes_a_new_key_and_old_tokens_still_verify(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = service(*data_dir_keys(cli_env))
    old_kid = key_id(data_dir_keys(cli_env)[0])
    token = before.issue("user-1", "refresh", generation=1, **IDENTITY)

    assert main(["jwt", "rotate"]) == 0

    keys = data_dir_keys(cli_env)
    new_kid = key_id(keys[0])
    out = capsys.readouterr().out
    assert new_kid != old_kid
    assert f"kid {new_kid}" in out
    assert old_kid in out
    assert "restart" in out
    assert keys[0] not in out and keys[1] not in out  # ids only, never the keys
    after = service(*keys)
    assert after.verify(token, "refresh").subject == "user-1"
    assert jwt.get_unverified_header(after.issue("u", "access", **IDENTITY))["kid"] == new_kid


def test_norn_jwt_rotate_keep_bounds_the_previous_keys(cli_env: Path) -> None:
    first = data_dir_keys(cli_env)[0]
    for _ in range(3):
        assert main(["jwt", "rotate", "--keep", "0"]) == 0

    keys = data_dir_keys(cli_env)
    assert len(keys) == 2
    assert first not in keys
    assert main(["jwt", "rotate", "--keep", "-1"]) == 2


def test_norn_jwt_rotate_refuses_when_the_key_comes_from_the_environment(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NORN_JWT_SECRET", KEY_A)

    assert main(["jwt", "rotate"]) == 2

    err = capsys.readouterr().err
    assert "NORN_JWT_SECRET" in err and "NORN_JWT_PREVIOUS_SECRETS" in err
    assert KEY_A not in err
    assert not (cli_env / "jwt.key").exists()
    assert not (cli_env / "jwt.previous").exists()


# --- the verification cache ----------------------------------------------------------------


def test_a_verified_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = service(KEY_A, access_ttl=60)
    token = tokens.issue("u-1", "access", **IDENTITY)
    assert tokens.verify(token).subject == "u-1"  # verified, and kept
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    refused(tokens, token)


def test_a_kept_verification_does_not_make_a_token_of_another_type_valid() -> None:
    tokens = service(KEY_A)
    token = tokens.issue("u-1", "access", **IDENTITY)
    tokens.verify(token)
    refused(tokens, token, "refresh")
    assert tokens.verify(token).token_type == "access"


def test_a_tampered_copy_of_a_verified_token_is_still_refused() -> None:
    tokens = service(KEY_A)
    token = tokens.issue("u-1", "access", **IDENTITY)
    tokens.verify(token)
    head, payload, signature = token.split(".")
    refused(tokens, f"{head}.{payload}.{signature[:-2]}AA")
