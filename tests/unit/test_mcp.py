"""The MCP server's own logic, without servers: each tool needs the permission of the REST
route it stands for, a call is authorised before its work runs, arguments are refused as
REST refuses the same parameters, and failures read like REST's errors without leaking
what went wrong inside (tests/integration/test_mcp.py runs the tools for real)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler

from api import mcp_arguments as check
from api.controllers.authoring import AuthoringController
from api.controllers.deployments import DeploymentController
from api.controllers.jobs import JobController
from api.controllers.pipeline_runs import PipelineRunController
from api.controllers.pipelines import PipelineController
from api.controllers.plugins import PluginController
from api.controllers.runs import RunController
from api.mcp_errors import InvalidArgument, tool_error
from api.mcp_server import Caller, ToolRunner
from api.mcp_tool_list import PERMISSIONS
from api.schemas.pipelines import PipelineWrite
from application.errors import NotFound, PermissionDenied, QuotaExceeded, RateLimited
from application.principal import Principal
from domain.errors import FieldError, InvalidDefinition

STANDS_FOR = {
    "list_pipelines": ("GET", "/api/v1/pipelines"),
    "get_pipeline": ("GET", "/api/v1/pipelines/{pipeline_id:uuid}"),
    "validate_pipeline": ("POST", "/api/v1/pipelines/validate"),
    "generate_pipeline": ("POST", "/api/v1/pipelines/generate"),
    "trigger_run": ("POST", "/api/v1/pipelines/{pipeline_id:uuid}/runs"),
    "get_run": ("GET", "/api/v1/runs/{run_id:uuid}"),
    "get_run_status": ("GET", "/api/v1/runs/{run_id:uuid}/status"),
    "get_run_logs": ("GET", "/api/v1/runs/{run_id:uuid}/logs"),
    "list_runs": ("GET", "/api/v1/runs"),
    "list_deployments": ("GET", "/api/v1/deployments"),
    "list_jobs": ("GET", "/api/v1/scheduler/jobs"),
    "list_plugins": ("GET", "/api/v1/plugins"),
}


def test_each_tool_needs_the_permission_of_the_rest_route_it_stands_for() -> None:
    declared: dict[tuple[str, str], Any] = {}
    for controller in (
        PipelineController,
        AuthoringController,
        PipelineRunController,
        RunController,
        DeploymentController,
        JobController,
        PluginController,
    ):
        for handler in vars(controller).values():
            if not isinstance(handler, HTTPRouteHandler):
                continue
            # The handler's own permission, else its controller's (PluginController).
            shared = vars(controller).get("opt") or {}
            permission = handler.opt.get("permission", shared.get("permission"))
            for path in handler.paths:
                for method in handler.http_methods:
                    declared[(method, f"{controller.path}{path}".rstrip("/"))] = permission
    assert set(PERMISSIONS) == set(STANDS_FOR)
    for tool, route in STANDS_FOR.items():
        assert PERMISSIONS[tool] == declared[route], tool


def test_the_readme_shows_each_tool_with_its_permission() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    shown = dict(re.findall(r"^\| `([a-z_]+)` \| .* \| `([a-z_]+:[a-z_]+)` \(", readme, re.M))
    assert shown == {tool: str(permission) for tool, permission in PERMISSIONS.items()}


class _As(Caller):
    def __init__(self, *roles: str) -> None:
        self.principal = Principal("k1", "key", "t1", frozenset(roles), kind="api_key")

    async def __call__(self, ctx: Any) -> tuple[Principal, str]:
        return self.principal, "req-1"


async def test_a_call_is_authorised_before_its_work_runs() -> None:
    done: list[str] = []

    async def work(principal: Principal, command: Any) -> dict[str, Any]:
        done.append(command.actor)
        return {"run_id": "r1"}

    refused = await ToolRunner(None, _As("viewer"))(None, "trigger_run", work)  # type: ignore[arg-type]
    assert refused.is_error and done == []
    error = (refused.structured_content or {})["error"]
    assert (error["status"], error["code"], error["request_id"]) == (
        403,
        "PERMISSION_DENIED",
        "req-1",
    )
    assert "runs:trigger" in error["message"]

    answered = await ToolRunner(None, _As("operator"))(None, "trigger_run", work)  # type: ignore[arg-type]
    assert not answered.is_error and answered.structured_content == {"run_id": "r1"}
    assert done == ["api_key:k1"]  # the command acts as the caller


def test_arguments_are_refused_as_rest_refuses_the_same_parameters() -> None:
    with pytest.raises(InvalidArgument, match="run_id must be a UUID") as bad:
        check.uuid_of("run_id", "12")
    assert (bad.value.field, bad.value.status) == ("run_id", 400)
    for value in (0, 501):
        with pytest.raises(InvalidArgument, match="between 1 and 500"):
            check.limit(value)
    assert check.limit(500) == 500
    with pytest.raises(InvalidArgument, match="NUL"):
        check.text("status", "a\x00b")
    with pytest.raises(InvalidArgument, match="at most 200"):
        check.text("name", "x" * 201)
    with pytest.raises(InvalidArgument, match="offset"):
        check.moment("since", "2026-01-01T00:00:00")  # no offset: ambiguous
    with pytest.raises(InvalidArgument, match="RFC 3339"):
        check.moment("since", "yesterday")
    assert check.moment("since", "2026-01-01T00:00:00Z") is not None
    with pytest.raises(InvalidArgument, match="one of pending"):
        check.one_of("status", "live", ("pending", "active"))
    with pytest.raises(InvalidArgument, match="0 or more"):
        check.position(-1)


def test_a_definition_is_decoded_as_the_rest_body_and_its_problem_named() -> None:
    with pytest.raises(InvalidArgument) as unknown:
        check.body("definition", {"name": "x", "steps": [], "colour": 1}, PipelineWrite)
    assert (unknown.value.field, unknown.value.status) == ("definition", 422)
    assert "colour" in str(unknown.value)
    with pytest.raises(InvalidArgument) as nested:
        check.body("definition", {"name": "x", "steps": [{"name": "s"}]}, PipelineWrite)
    assert nested.value.field == "definition.steps[0]" and "plugin" in str(nested.value)
    with pytest.raises(InvalidArgument, match="JSON object"):
        check.body("definition", ["not", "an", "object"], PipelineWrite)


def test_failures_read_like_rest_errors_and_keep_internals_out() -> None:
    def error(exc: Exception) -> dict[str, Any]:
        return dict(tool_error(exc, "req-9")["error"])

    assert error(NotFound("run", "r1"))["code"] == "RESOURCE_NOT_FOUND"
    assert error(NotFound("run", "r1"))["message"] == "run r1 not found"
    assert (error(PermissionDenied("no"))["status"], error(PermissionDenied("no"))["code"]) == (
        403,
        "PERMISSION_DENIED",
    )
    quota = error(QuotaExceeded("max_runs_per_day", 10, 10))
    assert (quota["status"], quota["code"], quota["details"][0]["limit"]) == (
        409,
        "QUOTA_EXCEEDED",
        10,
    )
    invalid = error(InvalidDefinition([FieldError("steps[0].plugin", "unknown plugin")]))
    assert (invalid["status"], invalid["details"]) == (
        422,
        [{"field": "steps[0].plugin", "message": "unknown plugin"}],
    )
    assert error(RateLimited("slow down", 2.5))["code"] == "RATE_LIMIT_EXCEEDED"
    bad_cursor = ValidationException(
        "bad cursor", extra=[{"key": "cursor", "message": "bad cursor", "source": "query"}]
    )
    assert error(bad_cursor)["details"] == [{"field": "cursor", "message": "bad cursor"}]
    crash = error(RuntimeError("password=hunter2 in a connection string"))
    assert (crash["status"], crash["code"]) == (500, "INTERNAL_ERROR")
    assert "hunter2" not in str(crash) and crash["request_id"] == "req-9"
