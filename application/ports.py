"""Interfaces the application needs from the outside world (implemented in
infrastructure/ and projections/)."""

from __future__ import annotations

from typing import Any, Protocol


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...


class PluginCatalog(Protocol):
    def check(self, plugin: str, config: dict[str, Any]) -> list[str]:
        """Problems with a step's plugin reference and config, as 'field: message'."""
        ...


class ApiKeySecrets(Protocol):
    """Makes, reads and hashes API keys (infrastructure/api_key_secrets.py)."""

    def new_key(self) -> tuple[str, str]: ...

    def format(self, prefix: str, secret: str) -> str: ...

    def parse(self, key: str) -> tuple[str, str] | None: ...

    def hash(self, prefix: str, secret: str) -> str: ...

    def verify(self, secret_hash: str, prefix: str, secret: str) -> bool: ...
