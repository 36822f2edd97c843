"""The dashboard's pipeline revisions and actions over the real app, PostgreSQL and NATS:
two revisions side by side, roll back, clone and deploy from the pipeline page (their
effect read back through the API, their refusals the API's own messages as pages), what
a viewer is offered and refused, the CSRF token, and another tenant's pipeline as 404."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    create_pipeline,
    make_tenant_user,
    pipeline_body,
    platform_admin,
    serving_app,
    unique,
    visible,
)
from tests.integration.deployment_client import read_at
from tests.integration.test_ui import PASSWORD, csrf_of, sign_in

PIPELINES = "/api/v1/pipelines"
Headers = dict[str, str]
_ROW = re.compile(r'<tr class="(same|changed)">(.*?)</tr>', re.S)
_CELL = re.compile(r'<td class="line (\w+)" data-kind="\w+">(.*?)</td>', re.S)


async def _signed_in(client: AsyncTestClient, username: str) -> None:
    client.cookies.clear()
    signed = await sign_in(client, username)
    assert signed.status_code == 303, signed.text


async def _revised(client: AsyncTestClient, headers: Headers, pipeline: dict[str, Any]) -> int:
    """Revision 2: another description and a fourth step."""
    body = pipeline_body(pipeline["name"], description="revision 2")
    body["steps"].append(
        {"name": "audit", "plugin": "Output.file", "config": {"path": "audit.jsonl"}}
    )
    revised = await client.put(f"{PIPELINES}/{pipeline['id']}", json=body, headers=headers)
    assert revised.status_code == 200 and revised.json()["revision"] == 2, revised.text
    return int(revised.json()["position"])


def _diff_rows(text: str) -> list[tuple[str, str, str, str]]:
    """Each row of the diff table as (A's kind, A's text, B's kind, B's text)."""
    rows = []
    for _, row in _ROW.findall(text):
        (a_kind, a_text), (b_kind, b_text) = _CELL.findall(row)
        plain = [html.unescape(re.sub(r"<[^>]+>", "", t)) for t in (a_text, b_text)]
        rows.append((a_kind, plain[0], b_kind, plain[1]))
    return rows


def _definition(revision: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in revision.items() if k not in ("revision", "kind", "actor", "at")}


async def test_diff_roll_back_and_clone(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uipipe")
    _, editor = await make_tenant_user(client, padmin, name, "editor")
    pipeline = await create_pipeline(client, editor, "ui-revised")
    pid = pipeline["id"]
    await visible(client, editor, f"{PIPELINES}/{pid}", await _revised(client, editor, pipeline))
    await _signed_in(client, f"{name}-editor")

    # The page offers the comparison (previous against current) and a roll back to 1.
    shown = await client.get(f"/ui/pipelines/{pid}")
    assert shown.status_code == 200, shown.text
    assert '<option value="1" selected>' in shown.text.split('id="diff-from"')[1]
    assert '<option value="2" selected>' in shown.text.split('id="diff-to"')[1]
    assert shown.text.count('data-action="rollback"') == 1  # not to the current one
    assert f'href="/ui/pipelines/{pid}/diff?from=1&amp;to=2"' in shown.text
    for action in ("clone", "deploy", "run"):
        assert f'data-action="{action}"' in shown.text
    csrf = csrf_of(shown.text)

    # Revision 1 beside revision 2: what changed is marked, with symbols and words.
    diff = await client.get(f"/ui/pipelines/{pid}/diff", params={"from": 1, "to": 2})
    assert diff.status_code == 200, diff.text
    rows = _diff_rows(diff.text)
    assert (
        "removed",
        '\u2212removed:   "description": "reads, filters, writes",',
        "added",
        '+added:   "description": "revision 2",',
    ) in rows
    assert any(b_kind == "added" and '"name": "audit"' in b for _, _, b_kind, b in rows)
    assert not any(a_kind == "removed" and '"name": "paid"' in a for a_kind, a, _, _ in rows)
    assert "Steps added: audit" in diff.text and "Fields changed: description" in diff.text
    # Without a choice: the previous revision against the current one.
    default = await client.get(f"/ui/pipelines/{pid}/diff")
    assert default.status_code == 200 and _diff_rows(default.text) == rows
    same = await client.get(f"/ui/pipelines/{pid}/diff", params={"from": 2, "to": 2})
    assert 'data-testid="no-change"' in same.text

    # An unknown revision: the API's 404 and message, as a page.
    api = await client.get(f"{PIPELINES}/{pid}/revisions/9", headers=editor)
    assert api.status_code == 404
    unknown = await client.get(f"/ui/pipelines/{pid}/diff", params={"from": 1, "to": 9})
    assert unknown.status_code == 404
    assert api.json()["error"]["message"] in html.unescape(unknown.text)
    malformed = await client.get(f"/ui/pipelines/{pid}/diff", params={"from": "one"})
    assert malformed.status_code == 400

    # Roll back to 1: revision 3 with revision 1's definition; the page waits for it.
    rolled = await client.post(
        f"/ui/pipelines/{pid}/rollback",
        data={"revision": "1", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert rolled.status_code == 303, rolled.text
    assert rolled.headers["location"].startswith(f"/ui/pipelines/{pid}?min_position=")
    after = await client.get(rolled.headers["location"])
    assert "rolled_back (to 1)" in after.text and "3 (current)" in after.text
    first = (await client.get(f"{PIPELINES}/{pid}/revisions/1", headers=editor)).json()
    third = (await client.get(f"{PIPELINES}/{pid}/revisions/3", headers=editor)).json()
    assert third["kind"] == "rolled_back" and _definition(third) == _definition(first)
    # Refusals are the domain's, with the API's status and message.
    current = await client.post(
        f"/ui/pipelines/{pid}/rollback", data={"revision": "3", "csrf_token": csrf}
    )
    assert current.status_code == 409 and "revision 3 is already the current one" in current.text
    for bad in ("", "two", "0"):
        refused = await client.post(
            f"/ui/pipelines/{pid}/rollback", data={"revision": bad, "csrf_token": csrf}
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert "<code>revision</code>" in refused.text
    history = (await client.get(f"{PIPELINES}/{pid}/history", headers=editor)).json()["items"]
    assert [r["revision"] for r in history] == [1, 2, 3]

    # Clone: a new pipeline with the current definition, shown once the read model has it.
    cloned = await client.post(
        f"/ui/pipelines/{pid}/clone",
        data={"name": "  ui-copy  ", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert cloned.status_code == 303, cloned.text
    location = cloned.headers["location"]
    copy_id = re.fullmatch(r"/ui/pipelines/([0-9a-f-]{36})\?min_position=\d+", location)
    assert copy_id and copy_id.group(1) != pid, location
    copy_page = await client.get(location)
    assert copy_page.status_code == 200 and "<h1>ui-copy</h1>" in copy_page.text
    copy = (await client.get(f"{PIPELINES}/{copy_id.group(1)}", headers=editor)).json()
    assert copy["cloned_from"] == {"pipeline_id": pid, "revision": 3}
    assert [s["name"] for s in copy["steps"]] == ["read", "paid", "write"]

    # A taken name: the API's conflict message on the page, nothing made.
    api_taken = await client.post(
        f"{PIPELINES}/{pid}/clone", json={"name": "ui-copy"}, headers=editor
    )
    assert api_taken.status_code == 409
    taken = await client.post(
        f"/ui/pipelines/{pid}/clone", data={"name": "ui-copy", "csrf_token": csrf}
    )
    assert taken.status_code == 409
    assert api_taken.json()["error"]["message"] in html.unescape(taken.text)
    empty = await client.post(f"/ui/pipelines/{pid}/clone", data={"name": "", "csrf_token": csrf})
    assert empty.status_code == 422 and "<code>name</code>" in empty.text
    names = [p["name"] for p in (await client.get(PIPELINES, headers=editor)).json()["items"]]
    assert sorted(names) == ["ui-copy", "ui-revised"]


async def test_deploy_creates_then_releases(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uideploy")
    _, editor = await make_tenant_user(client, padmin, name, "editor")
    pipeline = await create_pipeline(client, editor, "ui-deployed")
    pid = pipeline["id"]
    await visible(client, editor, f"{PIPELINES}/{pid}", pipeline["position"])
    await _signed_in(client, f"{name}-editor")
    csrf = csrf_of((await client.get(f"/ui/pipelines/{pid}")).text)

    made = await client.post(
        f"/ui/pipelines/{pid}/deploy",
        data={"environment": "staging", "strategy": "", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    found = re.fullmatch(
        r"/ui/deployments/([0-9a-f-]{36})\?min_position=\d+", made.headers["location"]
    )
    assert found, made.headers["location"]
    deployment_id = found.group(1)
    shown = await client.get(made.headers["location"])
    assert shown.status_code == 200 and 'data-testid="active-release">#1<' in shown.text

    # Revision 2 to the same environment: a release of the same deployment.
    await visible(client, editor, f"{PIPELINES}/{pid}", await _revised(client, editor, pipeline))
    page = await client.get(f"/ui/pipelines/{pid}")
    assert "Deploy revision 2" in page.text
    again = await client.post(
        f"/ui/pipelines/{pid}/deploy",
        data={"environment": "staging", "strategy": "direct", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert again.status_code == 303, again.text
    assert again.headers["location"].startswith(f"/ui/deployments/{deployment_id}?")
    position = int(again.headers["location"].rsplit("=", 1)[1])
    status = await read_at(client, editor, f"/api/v1/deployments/{deployment_id}/status", position)
    assert (status["active_release"], status["active_revision"]) == (2, 2)

    # Bad fields: the API's messages (the domain's for a blue-green release without a timeout).
    api_bad = await client.post(
        f"{PIPELINES}/{pid}/deploy",
        json={"environment": "staging", "strategy": {"type": "blue-green"}},
        headers=editor,
    )
    assert api_bad.status_code == 422, api_bad.text
    no_timeout = await client.post(
        f"/ui/pipelines/{pid}/deploy",
        data={"environment": "staging", "strategy": "blue-green", "csrf_token": csrf},
    )
    assert no_timeout.status_code == 422
    assert api_bad.json()["error"]["message"] in html.unescape(no_timeout.text)
    for fields in ({"environment": "Not An Env"}, {"environment": ""}, {"strategy": "sideways"}):
        bad = await client.post(
            f"/ui/pipelines/{pid}/deploy",
            data={"environment": "qa", "csrf_token": csrf, **fields},
        )
        assert bad.status_code == 422, (fields, bad.text)
    listed = (await client.get("/api/v1/deployments", headers=editor)).json()["items"]
    assert [d["id"] for d in listed] == [deployment_id]


async def test_viewer_csrf_and_another_tenant(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uiview")
    tenant_id, editor = await make_tenant_user(client, padmin, name, "editor")
    pipeline = await create_pipeline(client, editor, "ui-guarded")
    pid = pipeline["id"]
    await visible(client, editor, f"{PIPELINES}/{pid}", await _revised(client, editor, pipeline))
    viewer = unique("viewer")
    made = await client.post(
        "/api/v1/users",
        json={
            "username": viewer,
            "password": PASSWORD,
            "tenant_id": tenant_id,
            "roles": ["viewer"],
        },
        headers=padmin,
    )
    assert made.status_code == 201, made.text
    actions: list[tuple[str, dict[str, str]]] = [
        ("rollback", {"revision": "1"}),
        ("clone", {"name": "stolen"}),
        ("deploy", {"environment": "staging"}),
        ("run", {"params": "{}"}),
    ]

    # A viewer may compare revisions, is offered no write, and is refused one posted.
    await _signed_in(client, viewer)
    shown = await client.get(f"/ui/pipelines/{pid}")
    assert shown.status_code == 200, shown.text
    assert "data-action=" not in shown.text and 'id="diff-from"' in shown.text
    assert (await client.get(f"/ui/pipelines/{pid}/diff")).status_code == 200
    csrf = csrf_of(shown.text)
    for action, fields in actions:
        refused = await client.post(
            f"/ui/pipelines/{pid}/{action}", data={**fields, "csrf_token": csrf}
        )
        assert refused.status_code == 403, (action, refused.text)
        assert "may not" in refused.text

    # The editor without the CSRF token: refused before anything is done.
    await _signed_in(client, f"{name}-editor")
    for action, fields in actions:
        no_token = await client.post(f"/ui/pipelines/{pid}/{action}", data=fields)
        assert no_token.status_code == 403, (action, no_token.text)
        assert "CSRF" in no_token.text

    # Another tenant's admin: every new page and action is a 404, nothing of A's shown.
    other = unique("uiother")
    await make_tenant_user(client, padmin, other, "admin")
    await _signed_in(client, f"{other}-admin")
    csrf = csrf_of((await client.get("/ui/pipelines")).text)
    for params in ({}, {"from": 1, "to": 2}):
        answer = await client.get(f"/ui/pipelines/{pid}/diff", params=params)
        assert answer.status_code == 404, answer.text
        assert "ui-guarded" not in answer.text
    for action, fields in actions:
        answer = await client.post(
            f"/ui/pipelines/{pid}/{action}",
            data={**fields, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert answer.status_code == 404, (action, answer.text)
        assert "ui-guarded" not in answer.text
    client.cookies.clear()

    # Nothing was done to A's pipeline by any of it.
    history = (await client.get(f"{PIPELINES}/{pid}/history", headers=editor)).json()["items"]
    assert [r["revision"] for r in history] == [1, 2]
    names = [p["name"] for p in (await client.get(PIPELINES, headers=editor)).json()["items"]]
    assert names == ["ui-guarded"]
    assert (await client.get("/api/v1/deployments", headers=editor)).json()["items"] == []
    assert (await client.get("/api/v1/runs", headers=editor)).json()["items"] == []


async def test_in_a_browser_compare_and_clone_at_both_widths(
    settings: Settings, tmp_path: Path
) -> None:
    """In Chromium, by label and role only: the comparison chosen on the pipeline page,
    the diff at 1280 px and 375 px without sideways scrolling (a long line wraps), and a
    clone. Skipped where test_ui_browser.py is (no Chromium and not required)."""
    from tests.e2e.ui_browser_support import browser, shoot, skip_without_browser
    from tests.e2e.ui_browser_support import sign_in as browser_sign_in

    skip_without_browser()
    async with serving_app(settings) as api:
        base = str(api.base_url).rstrip("/")
        padmin = await platform_admin(api, settings)
        _, editor = await make_tenant_user(api, padmin, "uibrowse", "editor")
        pipeline = await create_pipeline(api, editor, "ui-wide")
        body = pipeline_body("ui-wide", description="x" * 400)
        revised = await api.put(f"{PIPELINES}/{pipeline['id']}", json=body, headers=editor)
        assert revised.status_code == 200, revised.text
        await visible(api, editor, f"{PIPELINES}/{pipeline['id']}", revised.json()["position"])
        async with browser(tmp_path) as context:
            page = await context.new_page()
            await browser_sign_in(page, base, "uibrowse-editor")
            await page.goto(f"{base}/ui/pipelines/{pipeline['id']}")
            await shoot(page, "pipeline-actions")
            await page.get_by_label("Revision A").select_option("1")
            await page.get_by_label("Revision B").select_option("2")
            await page.get_by_role("button", name="Compare").click()
            await page.wait_for_url(f"{base}/ui/pipelines/{pipeline['id']}/diff?from=1&to=2")
            assert await page.locator("td.line.removed").count() == 1
            assert await page.locator("td.line.added").count() == 1
            await shoot(page, "pipeline-diff")
            await page.goto(f"{base}/ui/pipelines/{pipeline['id']}")
            await page.get_by_label("New pipeline's name").fill("ui-wide-copy")
            await page.get_by_role("button", name="Clone pipeline").click()
            await page.wait_for_url(f"{base}/ui/pipelines/**")
            assert await page.get_by_role("heading", name="ui-wide-copy").count() == 1
