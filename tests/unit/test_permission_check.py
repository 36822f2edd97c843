"""The API's permission check (api/auth.py `check_permission`), run by a middleware on
every request with the route its router found: what each kind of route declaration
lets through. No app: a scope is a dict."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from api.auth import AUTHENTICATES_ITSELF, check_permission
from application.authorization import Permission
from application.errors import AuthenticationFailed, PermissionDenied
from application.principal import Principal

T1 = "00000000-0000-4000-8000-0000000000a1"
EDITOR = Principal("u1", "alice", T1, frozenset({"editor"}), tenant_status="active")
VIEWER = Principal("u2", "bob", T1, frozenset({"viewer"}), tenant_status="active")


def scope(opt: dict[str, Any], user: Principal | None = None, method: str = "POST") -> Any:
    found = {"route_handler": SimpleNamespace(opt=opt), "method": method}
    return found if user is None else {**found, "user": user}


def test_a_route_needs_the_permission_it_declares() -> None:
    check_permission(scope({"permission": Permission.PIPELINES_WRITE}, EDITOR))
    with pytest.raises(PermissionDenied):
        check_permission(scope({"permission": Permission.PIPELINES_WRITE}, VIEWER))


def test_a_route_that_declares_no_permission_is_refused_to_anyone() -> None:
    with pytest.raises(PermissionDenied):
        check_permission(scope({}, EDITOR))


def test_public_routes_preflights_and_self_authenticating_sockets_pass_unauthenticated() -> None:
    check_permission(scope({"public": True}))
    check_permission(scope({"permission": Permission.PIPELINES_WRITE}, method="OPTIONS"))
    check_permission(scope({AUTHENTICATES_ITSELF: True, "permission": Permission.EVENTS_READ}))


def test_a_declared_permission_without_a_principal_is_unauthenticated() -> None:
    with pytest.raises(AuthenticationFailed):
        check_permission(scope({"permission": Permission.PIPELINES_READ}))
    check_permission(scope({"permission": "authenticated"}, VIEWER))
