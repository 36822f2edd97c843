"""A deployment's writes on the dashboard over the real app: release a revision, run the
active release, retire; their effect read back through the API, their refusals the API's
own status and message as pages (nothing done), and a viewer offered none of them and
refused each."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import create_pipeline, make_tenant_user, platform_admin, unique
from tests.integration.deployment_client import BASE, deploy, read_at, revise
from tests.integration.test_ui import PASSWORD
from tests.integration.ui_forms import signed_in


async def test_release_run_and_retire_from_the_deployment_page(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    tenant = unique("uidep")
    tenant_id, admin = await make_tenant_user(client, padmin, tenant, "admin")
    pipeline = await create_pipeline(client, admin, "shipped")
    deployment = await deploy(client, admin, pipeline["id"], "production")
    await revise(client, admin, pipeline)
    path = f"{BASE}/{deployment['id']}"
    await read_at(client, admin, path, deployment["position"])
    page_path = f"/ui/deployments/{deployment['id']}"
    csrf = await signed_in(client, f"{tenant}-admin".lower(), "/ui/deployments")

    shown = await client.get(page_path)
    for action in ("release", "execute", "retire"):
        assert f'data-action="{action}"' in shown.text, action

    # Refusals: the API's status and message, nothing released.
    for fields, status, words in (
        ({"revision": "two"}, 422, "revision"),
        ({"revision": "9"}, 422, "revision 9 does not exist"),
        ({"strategy": "canary"}, 422, "strategy"),
    ):
        refused = await client.post(
            f"{page_path}/release", data={**fields, "csrf_token": csrf}, follow_redirects=False
        )
        assert refused.status_code == status, (fields, refused.status_code, refused.text[:1500])
        assert words in refused.text
    releases = (await client.get(f"{path}/releases", headers=admin)).json()
    assert [r["release"] for r in releases["items"]] == [1]

    released = await client.post(
        f"{page_path}/release", data={"revision": "2", "csrf_token": csrf}, follow_redirects=False
    )
    assert released.status_code == 303, released.text
    after = await client.get(released.headers["location"])
    assert 'data-testid="active-release">#2<' in after.text
    status = (await client.get(f"{path}/status", headers=admin)).json()
    assert (status["active_release"], status["active_revision"]) == (2, 2)

    bad_params = await client.post(
        f"{page_path}/execute", data={"params": "{nope", "csrf_token": csrf}
    )
    assert bad_params.status_code == 422 and "params: not JSON" in bad_params.text
    a_list = await client.post(f"{page_path}/execute", data={"params": "[1]", "csrf_token": csrf})
    assert a_list.status_code == 422 and "params: must be a JSON object" in a_list.text
    assert (await client.get("/api/v1/runs", headers=admin)).json()["items"] == []
    executed = await client.post(
        f"{page_path}/execute",
        data={"params": '{"day": "2026-12-03"}', "csrf_token": csrf},
        follow_redirects=False,
    )
    assert executed.status_code == 303, executed.text
    assert executed.headers["location"].startswith("/ui/runs/")
    run_id = executed.headers["location"].split("/ui/runs/")[1].split("?")[0]
    at = executed.headers["location"].split("min_position=")[1]
    run = (await client.get(f"/api/v1/runs/{run_id}?min_position={at}", headers=admin)).json()
    assert run["revision"] == 2 and run["params"]["day"] == "2026-12-03", run
    assert run["trigger"]["kind"] == "deployment", run

    # A viewer: offered none of the three, refused each.
    viewer = unique("uidep-viewer")
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
    viewer_csrf = await signed_in(client, viewer)
    seen = await client.get(page_path)
    assert not any(f'data-action="{a}"' in seen.text for a in ("release", "execute", "retire"))
    for action in ("release", "execute", "retire"):
        answer = await client.post(
            f"{page_path}/{action}", data={"csrf_token": viewer_csrf}, follow_redirects=False
        )
        assert answer.status_code == 403, (action, answer.status_code)

    # Retire: gone from the list, its page says retired, no more writes offered.
    csrf = await signed_in(client, f"{tenant}-admin".lower(), "/ui/deployments")
    retired = await client.post(
        f"{page_path}/retire", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert retired.status_code == 303, retired.text
    listing = await client.get(retired.headers["location"])
    assert deployment["id"] not in listing.text
    status = (await client.get(f"{path}/status", headers=admin)).json()
    assert status["status"] == "retired", status
    gone = await client.get(page_path)
    assert not any(f'data-action="{a}"' in gone.text for a in ("release", "execute", "retire"))
    client.cookies.clear()
