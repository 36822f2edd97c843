"""Which config fields of a plugin hold credentials (README "Secrets in step configs").

A plugin's Config marks them in its msgspec schema, so GET /api/v1/plugins shows them
too (`x-norn-secret`):

- `SensitiveText`: a credential (a signing secret, a password, a token). A new write
  must give it as a secret reference `{"secret": "<name>"}`; a plain string is refused.
- `SecretText`: not a credential by itself, but may be given as a reference (a user
  name, a URL that embeds a token).
- `Headers`: a dict of header values, each of which may be a reference; those named in
  `SENSITIVE_HEADERS` (case-insensitive) must be.

`secrecy_of(Config)` reads the marks back; references are resolved and values masked by
infrastructure/secret_references.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

SECRET_MARK = "x-norn-secret"  # noqa: S105 (a schema key, not a password)
SENSITIVE_KEYS_MARK = "x-norn-sensitive-keys"
REQUIRED, ACCEPTED = "required", "accepted"

SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
)

_REFERENCE_HELP = 'Give it as a secret reference: {"secret": "<name>"} (POST /api/v1/secrets).'

SensitiveText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=4096,
        extra_json_schema={SECRET_MARK: REQUIRED},
        description="A credential. " + _REFERENCE_HELP,
    ),
]
SecretText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=4096,
        extra_json_schema={SECRET_MARK: ACCEPTED},
        description='Text, or a secret reference {"secret": "<name>"}.',
    ),
]
Headers = Annotated[
    dict[str, str],
    msgspec.Meta(
        extra_json_schema={SECRET_MARK: ACCEPTED, SENSITIVE_KEYS_MARK: sorted(SENSITIVE_HEADERS)},
        description="Request headers; a value may be a secret reference, and those of "
        + ", ".join(sorted(SENSITIVE_HEADERS))
        + " must be.",
    ),
]


@dataclass(frozen=True)
class Secrecy:
    """A Config's marked fields, by their names in the config."""

    required: frozenset[str] = frozenset()
    """Fields that must be a reference in a new write."""
    accepted: frozenset[str] = frozenset()
    """Fields that may be a reference (the required ones included)."""
    keyed: dict[str, frozenset[str]] = field(default_factory=dict)
    """Dict fields whose values may be references -> the keys (lower case) that must."""

    def requires(self, path: tuple[str | int, ...]) -> bool:
        """Whether the value at `path` (field, or field and key) is a credential."""
        if len(path) == 1:
            return path[0] in self.required
        return (
            len(path) == 2
            and isinstance(path[0], str)
            and isinstance(path[1], str)
            and path[1].lower() in self.keyed.get(path[0], frozenset())
        )

    def accepts(self, path: tuple[str | int, ...]) -> bool:
        if len(path) == 1:
            return path[0] in self.accepted
        return len(path) == 2 and isinstance(path[1], str) and path[0] in self.keyed

    @property
    def any(self) -> bool:
        return bool(self.accepted or self.keyed)


NO_SECRECY = Secrecy()


@lru_cache(maxsize=256)
def secrecy_of(config_type: type[msgspec.Struct]) -> Secrecy:
    info = mi.type_info(config_type)
    if not isinstance(info, mi.StructType):
        return NO_SECRECY
    required: set[str] = set()
    accepted: set[str] = set()
    keyed: dict[str, frozenset[str]] = {}
    for f in info.fields:
        mark = _mark(f.type)
        if mark is None:
            continue
        extra, inner = mark
        if isinstance(inner, mi.DictType):
            keyed[f.encode_name] = frozenset(k.lower() for k in extra.get(SENSITIVE_KEYS_MARK, ()))
            continue
        accepted.add(f.encode_name)
        if extra.get(SECRET_MARK) == REQUIRED:
            required.add(f.encode_name)
    return Secrecy(frozenset(required), frozenset(accepted), keyed)


def _mark(t: Any) -> tuple[dict[str, Any], Any] | None:
    """The field's x-norn-secret schema extras and the type they annotate, looking
    through an optional (`X | None`)."""
    if isinstance(t, mi.UnionType):
        for member in t.types:
            found = _mark(member)
            if found is not None:
                return found
        return None
    if isinstance(t, mi.Metadata) and t.extra_json_schema and SECRET_MARK in t.extra_json_schema:
        return t.extra_json_schema, t.type
    return None
