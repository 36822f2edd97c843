"""The permission table in the code is the one the README shows, and roles nest."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from application.authorization import ROLE_PERMISSIONS, Permission

README = Path(__file__).resolve().parents[2] / "README.md"
ROLES = ["platform_admin", "admin", "editor", "operator", "viewer"]


def readme_table() -> dict[str, set[str]]:
    granted: dict[str, set[str]] = {role: set() for role in ROLES}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([a-z_]+:[a-z_]+)` \|(.*)\|$", line)
        if not match:
            continue
        cells = [cell.strip() for cell in match.group(2).split("|")]
        for role, cell in zip(ROLES, cells, strict=True):
            if cell == "✓":
                granted[role].add(match.group(1))
    return granted


def test_the_readme_shows_the_permission_table_of_the_code() -> None:
    in_code = {role: {p.value for p in ROLE_PERMISSIONS[role]} for role in ROLES}

    assert readme_table() == in_code


def test_each_role_has_every_permission_of_the_role_below_it() -> None:
    for higher, lower in itertools.pairwise(ROLES):
        assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher], (higher, lower)


def test_only_the_platform_admin_manages_tenants() -> None:
    holders = [r for r in ROLES if Permission.TENANTS_MANAGE in ROLE_PERMISSIONS[r]]

    assert holders == ["platform_admin"]
