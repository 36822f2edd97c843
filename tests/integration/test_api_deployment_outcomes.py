"""Deployments over HTTP where outcomes compete: a pipeline's rollback redeployed to every
environment, concurrent releases and a release racing a rollback (one outcome each, never
two active releases), and verification deadlines met, missed and met at the last moment,
kept by the executors' maintenance with a real run."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, create_pipeline, running_app
from tests.integration.deployment_client import (
    BASE,
    Headers,
    deploy,
    new_tenant,
    new_user,
    read_at,
    revise,
    status_when,
)
from tests.integration.run_support import EXECUTING, executing, make_pipeline, step

GREEN = {"type": "blue-green", "verification_timeout": 3600}


async def _rollback(
    client: AsyncTestClient, headers: Headers, pipeline_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/pipelines/{pipeline_id}:rollback", json=body, headers=headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_rollback_with_redeploy_releases_the_new_revision_where_it_may(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    tenant_id, editor, root = await new_tenant(client, module_settings)
    admin = await new_user(client, root, tenant_id, "admin")
    pipeline = await create_pipeline(client, editor, "alpha")
    await revise(client, editor, pipeline)
    staging = await deploy(client, editor, pipeline["id"], "staging")
    canary = await deploy(client, editor, pipeline["id"], "canary", strategy=GREEN)
    production = await deploy(client, editor, pipeline["id"], "production")
    protect = await client.put(
        f"/api/v1/tenants/{tenant_id}/environments/production",
        json={"protected": True},
        headers=admin,
    )
    assert protect.status_code == 200, protect.text

    plain = await _rollback(client, editor, pipeline["id"], revision=1)
    assert (plain["revision"], plain["redeployed"], plain["not_redeployed"]) == (3, [], [])

    answer = await _rollback(client, editor, pipeline["id"], revision=1, redeploy=True)
    assert (answer["revision"], answer["rolled_back_to"], answer["previous_revision"]) == (4, 1, 3)
    assert [(r["environment"], r["release"], r["outcome"]) for r in answer["redeployed"]] == [
        ("staging", 2, "active")
    ]
    refused = {r["environment"]: (r["code"], r["reason"]) for r in answer["not_redeployed"]}
    assert refused["production"][0] == "PERMISSION_DENIED"
    assert "protected" in refused["production"][1]
    assert refused["canary"][0] == "RESOURCE_CONFLICT"  # its first release still verifies
    assert "release 1" in refused["canary"][1]
    position = answer["redeployed"][0]["position"]
    status = await read_at(client, editor, f"{BASE}/{staging['id']}/status", position)
    assert (status["active_release"], status["active_revision"]) == (2, 4)
    untouched = await read_at(client, editor, f"{BASE}/{production['id']}/status", position)
    assert untouched["active_revision"] == 2

    # An admin may release to the protected environment; canary's green still verifies.
    by_admin = await _rollback(client, admin, pipeline["id"], revision=2, redeploy=True)
    assert sorted(r["environment"] for r in by_admin["redeployed"]) == ["production", "staging"]
    assert [r["deployment_id"] for r in by_admin["not_redeployed"]] == [canary["id"]]

    bad = await client.post(
        f"/api/v1/pipelines/{pipeline['id']}:rollback",
        json={"revision": 1, "redeploy": "yes"},
        headers=editor,
    )
    assert [d["field"] for d in assert_error(bad, 422, "VALIDATION_ERROR")["details"]] == [
        "redeploy"
    ]


async def test_concurrent_releases_each_get_one_outcome_and_one_release_is_active(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    await revise(client, editor, pipeline)
    deployment = await deploy(client, editor, pipeline["id"], "staging")
    path = f"{BASE}/{deployment['id']}"

    direct = await asyncio.gather(
        *(client.post(f"{path}/releases", json={"revision": 2}, headers=editor) for _ in range(5))
    )
    assert [r.status_code for r in direct] == [201] * 5, [r.text for r in direct]
    numbers = sorted(r.json()["release"]["release"] for r in direct)
    assert numbers == [2, 3, 4, 5, 6]  # each its own release, none lost
    last = max(r.json()["position"] for r in direct)
    releases = (await read_at(client, editor, f"{path}/releases", last))["items"]
    assert [r["outcome"] for r in releases].count("active") == 1
    assert releases[-1]["outcome"] == "active" and releases[-1]["release"] == 6

    green = await asyncio.gather(
        *(
            client.post(f"{path}/releases", json={"revision": 1, "strategy": GREEN}, headers=editor)
            for _ in range(3)
        )
    )
    codes = sorted(r.status_code for r in green)
    assert codes == [202, 409, 409], [r.text for r in green]
    verifying = next(r.json() for r in green if r.status_code == 202)["release"]["release"]
    for loser in (r for r in green if r.status_code == 409):
        assert f"release {verifying}" in loser.json()["error"]["message"]


async def test_a_release_racing_a_rollback_leaves_exactly_one_active_release(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    _, editor, _ = await new_tenant(client, module_settings)
    pipeline = await create_pipeline(client, editor, "alpha")
    await revise(client, editor, pipeline)
    for environment in ("one", "two", "three"):
        deployment = await deploy(client, editor, pipeline["id"], environment, revision=1)
        path = f"{BASE}/{deployment['id']}"
        second = await client.post(f"{path}/releases", json={"revision": 2}, headers=editor)
        assert second.status_code == 201, second.text
        # Both succeed in either order: the rollback restores release 1 (revision 1),
        # whichever of the two the store took first.
        released, rolled = await asyncio.gather(
            client.post(f"{path}/releases", json={"revision": 2}, headers=editor),
            client.post(f"{path}/rollback", json={}, headers=editor),
        )
        assert (released.status_code, rolled.status_code) == (201, 200), (
            released.text,
            rolled.text,
        )
        a, b = released.json()["release"]["release"], rolled.json()["release"]
        assert sorted((a, b)) == [3, 4] and rolled.json()["rolled_back_to"] == 1
        position = max(released.json()["position"], rolled.json()["position"])
        status = await read_at(client, editor, f"{path}/status", position)
        assert status["active_release"] == 4
        assert status["active_revision"] == (1 if b == 4 else 2)
        releases = (await read_at(client, editor, f"{path}/releases", position))["items"]
        assert [r["outcome"] for r in releases].count("active") == 1


async def _history(client: Any, headers: Headers, path: str) -> list[dict[str, Any]]:
    response = await client.get(f"{path}/history", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_a_missed_deadline_fails_the_release_and_stops_its_run(settings: Settings) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        _, editor, _ = await new_tenant(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "slow", [step("emit", "Test.emit", count=1)]
        )
        deployment = await deploy(client, editor, pipeline_id, "production")
        path = f"{BASE}/{deployment['id']}"
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "slow", "steps": [step("nap", "Test.sleep", seconds=60)]},
            headers=editor,
        )
        assert revised.status_code == 200, revised.text
        timeout = {"type": "blue-green", "verification_timeout": 2}
        released = await client.post(
            f"{path}/releases", json={"revision": 2, "strategy": timeout}, headers=editor
        )
        assert released.status_code == 202, released.text
        release = released.json()["release"]

        status = await status_when(
            client, editor, path, lambda s: s["recent_releases"][0]["outcome"] == "failed"
        )
        assert status["status"] == "active" and status["active_release"] == 1
        failed = status["recent_releases"][0]
        assert "deadline" in failed["failure"]
        history = await _history(client, editor, path)
        failed_at = next(h["at"] for h in history if h["event"] == "release_failed")
        assert datetime.fromisoformat(failed_at) >= datetime.fromisoformat(release["deadline"])

        async def cancelled() -> dict[str, Any]:
            for _ in range(300):
                run = (await client.get(f"/api/v1/runs/{release['run_id']}", headers=editor)).json()
                if run["status"] == "cancelled":
                    return dict(run)
                await asyncio.sleep(0.1)
            raise AssertionError(f"the verification run was not stopped: {run}")

        await cancelled()
        executed = await client.post(f"{path}/execute", json={}, headers=editor)
        assert executed.status_code == 202 and executed.json()["revision"] == 1  # blue serves


async def test_a_run_ending_at_its_deadline_records_one_outcome(settings: Settings) -> None:
    """The run sleeps as long as the release may verify: whichever of its end and the
    deadline the store takes first decides, and the other changes nothing."""
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        _, editor, _ = await new_tenant(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "edge", [step("emit", "Test.emit", count=1)]
        )
        deployment = await deploy(client, editor, pipeline_id, "production")
        path = f"{BASE}/{deployment['id']}"
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "edge", "steps": [step("nap", "Test.sleep", seconds=2)]},
            headers=editor,
        )
        assert revised.status_code == 200, revised.text
        edge = {"type": "blue-green", "verification_timeout": 2}
        released = await client.post(
            f"{path}/releases", json={"revision": 2, "strategy": edge}, headers=editor
        )
        assert released.status_code == 202, released.text

        await status_when(
            client,
            editor,
            path,
            lambda s: (
                s["recent_releases"][0]["release"] == 2
                and s["recent_releases"][0]["outcome"] != "verifying"
            ),
        )
        await asyncio.sleep(2)  # let the loser of the two try (and change nothing)
        events = [h["event"] for h in await _history(client, editor, path)]
        ended = [e for e in events if e in ("release_verified", "release_failed")]
        assert len(ended) == 1, events
        status = (await client.get(f"{path}/status", headers=editor)).json()
        expected = 2 if ended == ["release_verified"] else 1
        assert status["active_release"] == expected
        assert [r["outcome"] for r in status["recent_releases"]].count("active") == 1
