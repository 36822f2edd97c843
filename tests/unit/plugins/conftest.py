from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.plugins.base import StepContext
from tests.unit.plugins.helpers import LocalServer, make_context


@pytest.fixture
def context(tmp_path: Path) -> StepContext:
    return make_context(tmp_path)


@pytest.fixture
def private_context(tmp_path: Path) -> StepContext:
    """A context allowed to reach 127.0.0.1 (NORN_ALLOW_PRIVATE_NETWORKS=1)."""
    return make_context(tmp_path, allow_private_networks=True)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    running = LocalServer().start()
    yield running
    running.stop()
