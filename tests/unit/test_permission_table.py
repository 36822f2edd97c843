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


def test_every_aggregate_names_the_permission_that_reads_its_events() -> None:
    """A new aggregate must say who may read its events in feeds and audit listings;
    until it does, only platform admins see them."""
    import domain
    from application.authorization import EVENT_READ_PERMISSIONS
    from domain.events import NornEvent

    for module in Path(domain.__file__).parent.glob("*.py"):
        __import__(f"domain.{module.stem}")
    kinds = {
        cls.aggregate_type
        for cls in _subclasses(NornEvent)
        if cls.__module__.startswith("domain.")  # not the tests' own events
    } - {""}
    assert kinds == set(EVENT_READ_PERMISSIONS)


def test_a_viewer_reads_resource_events_and_only_admins_read_identity_events() -> None:
    from application.authorization import may_read_event, readable_event_kinds
    from application.principal import Principal

    def kinds(*roles: str) -> frozenset[str]:
        return readable_event_kinds(
            Principal(subject_id="u", name="u", tenant_id="t", roles=frozenset(roles))
        )

    viewer, admin = kinds("viewer"), kinds("admin")
    for kind in ("pipeline", "run", "deployment", "job", "name_claim"):
        assert may_read_event(viewer, kind), kind
    for kind in ("user", "session", "api_key", "usage", "tenant"):
        assert not may_read_event(viewer, kind), kind
        assert may_read_event(admin, kind), kind
    platform = kinds("platform_admin")
    assert may_read_event(platform, "an_aggregate_added_later")
    assert not may_read_event(admin, "an_aggregate_added_later")


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found
