"""POST /api/v1/batch against the real app (README "Batch"): operations run in order, each
as if sent alone (its own status, role check, tenant scope, rate limit and
Idempotency-Key), batches that cannot run are refused before anything runs, and an atomic
batch stores all its operations' events in one transaction or none."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import uuid4

import psycopg
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    running_app,
    unique,
)

BATCH = "/api/v1/batch"
Headers = dict[str, str]


async def admin_of(client: AsyncTestClient, settings: Settings) -> Headers:
    return await login(client, settings.admin_username or "", settings.admin_password or "")


def op(method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
    operation: dict[str, Any] = {"method": method, "path": path}
    if body is not None:
        operation["body"] = body
    if headers:
        operation["headers"] = {k.replace("_", "-"): v for k, v in headers.items()}
    return operation


async def batch(
    client: AsyncTestClient, headers: Headers, operations: list[Any], **extra: Any
) -> dict[str, Any]:
    response = await client.post(BATCH, json={"operations": operations, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def error_in(result: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    assert result["status"] == status, result
    error = result["body"]["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert error["code"] == code, error
    return dict(error)


def events_named(settings: Settings, name: str) -> list[tuple[int, int, str]]:
    """(position, tx id, topic) of every stored event whose state mentions `name`."""
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT notification_id, tx_id::text::bigint, topic FROM norn_events"
            " WHERE convert_from(state, 'UTF8') LIKE %s ORDER BY notification_id",
            (f"%{name}%",),
        ).fetchall()
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


def appended_with(settings: Settings, position: int) -> list[tuple[int, str]]:
    """(position, topic) of every event of the transaction that stored `position`."""
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT notification_id, topic FROM norn_events WHERE tx_id ="
            " (SELECT tx_id FROM norn_events WHERE notification_id = %s) ORDER BY 1",
            (position,),
        ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


async def test_operations_answer_in_order_each_as_if_sent_alone(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("batch-mixed"), "editor")
    existing = await create_pipeline(client, editor, "existing")
    pid = existing["id"]
    answer = await batch(
        client,
        editor,
        [
            op("POST", "/api/v1/pipelines", pipeline_body("fresh")),
            op("POST", "/api/v1/pipelines", {"name": "no-steps", "steps": "none"}),
            op("GET", f"/api/v1/pipelines/{uuid4()}"),
            op("POST", "/api/v1/pipelines", pipeline_body("existing")),
            op(
                "PUT",
                f"/api/v1/pipelines/{pid}",
                pipeline_body("existing", tags=["b"]),
                If_Match='"1"',
            ),
            op("PUT", f"/api/v1/pipelines/{pid}", pipeline_body("existing"), If_Match='"1"'),
            op("GET", f"/api/v1/pipelines/{pid}:validate"),
            op("POST", f"/api/v1/pipelines/{pid}:rollback", {"revision": 1}),
            op("GET", "/api/v1/pipelines?limit=1&unknown=1"),
        ],
    )
    assert answer["atomic"] is False and answer["committed"] is None
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 422, 404, 409, 200, 412, 405, 200, 400]
    created, invalid, missing, taken, revised, stale, _, rolled, bad_query = results
    assert created["body"]["name"] == "fresh" and created["body"]["revision"] == 1
    assert created["headers"]["location"] == f"/api/v1/pipelines/{created['body']['id']}"
    assert error_in(invalid, 422, "VALIDATION_ERROR")["details"][0]["field"] == "steps"
    error_in(missing, 404, "RESOURCE_NOT_FOUND")
    error_in(taken, 409, "RESOURCE_CONFLICT")
    assert revised["headers"]["etag"] == '"2"' and revised["body"]["tags"] == ["b"]
    assert error_in(stale, 412, "VERSION_CONFLICT")["details"][0]["current_version"] == 2
    assert stale["headers"]["etag"] == '"2"'
    assert rolled["body"]["revision"] == 3 and rolled["body"]["rolled_back_to"] == 1
    assert "unknown" in error_in(bad_query, 400, "VALIDATION_ERROR")["message"]
    # Each operation is a request of its own: its own request id, the batch's with its index.
    ids = [r["headers"]["x-request-id"] for r in results]
    assert len(set(ids)) == len(ids)
    assert all(i.endswith(f".{n}") for n, i in enumerate(ids))
    for result in results:
        if result["status"] >= 400:
            assert result["body"]["error"]["request_id"] == result["headers"]["x-request-id"]
    # What succeeded is stored, and readable alone afterwards.
    read = await client.get(
        f"/api/v1/pipelines/{pid}",
        params={"min_position": rolled["body"]["position"]},
        headers=editor,
    )
    assert read.json()["revision"] == 3


async def test_an_operations_fields_selection_shapes_its_own_answer_only(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    """README's first Batch example ends with a GET that keeps `fields=id,name`: the
    selection applies to that operation's body, not to the batch's answer (which came
    back `{}`, every result lost, while the writes were made)."""
    client = module_app
    admin = await admin_of(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("batch-fields"), "editor")
    answer = await batch(
        client,
        editor,
        [
            op("POST", "/api/v1/pipelines", pipeline_body("selected")),
            op("GET", "/api/v1/pipelines?limit=2&fields=id,name"),
        ],
    )
    assert set(answer) == {"results", "atomic", "committed", "position"}, answer
    created, page = answer["results"]
    assert created["status"] == 201 and created["body"]["name"] == "selected"
    assert page["status"] == 200
    assert all(set(item) <= {"id", "name"} for item in page["body"]["items"]), page


async def test_an_operation_needs_its_own_role_and_sees_only_its_tenant(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, owner = await make_tenant_user(client, admin, unique("batch-owner"), "editor")
    theirs = await create_pipeline(client, owner, "theirs")
    _, viewer = await make_tenant_user(client, admin, unique("batch-viewer"), "viewer")
    _, operator = await make_tenant_user(client, admin, unique("batch-operator"), "operator")
    answer = await batch(
        client,
        viewer,
        [
            op("GET", "/api/v1/pipelines?limit=5"),
            op("POST", "/api/v1/pipelines", pipeline_body("not-mine-to-make")),
            op("GET", f"/api/v1/pipelines/{theirs['id']}"),
            op("DELETE", f"/api/v1/pipelines/{theirs['id']}"),
            op("GET", "/api/v1/users"),
            op("GET", "/api/v1/auth/me"),
        ],
    )
    statuses = [r["status"] for r in answer["results"]]
    assert statuses == [200, 403, 404, 403, 403, 200], answer
    error_in(answer["results"][1], 403, "PERMISSION_DENIED")
    assert answer["results"][5]["body"]["roles"] == ["viewer"]
    # An operator may not write pipelines either, but another tenant's is still a 404
    # when its role may act (deleting needs pipelines:write: 403 first, as alone).
    answer = await batch(client, operator, [op("GET", f"/api/v1/pipelines/{theirs['id']}/history")])
    error_in(answer["results"][0], 404, "RESOURCE_NOT_FOUND")
    unchanged = await client.get(f"/api/v1/pipelines/{theirs['id']}", headers=owner)
    assert unchanged.status_code == 200 and unchanged.json()["version"] == 1


async def test_an_operation_cannot_send_other_credentials(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, viewer = await make_tenant_user(client, admin, unique("batch-creds"), "viewer")
    response = await client.post(
        BATCH,
        json={
            "operations": [
                op(
                    "POST",
                    "/api/v1/tenants",
                    {"name": unique("stolen")},
                    Authorization=admin["Authorization"],
                ),
                op("GET", "/api/v1/tenants", X_Tenant_ID=str(uuid4())),
                op("GET", "/api/v1/pipelines", X_API_Key="nrn_x"),
            ]
        },
        headers=viewer,
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    fields = [d["field"] for d in error["details"]]
    assert fields == [
        "operations[0].headers.Authorization",
        "operations[1].headers.X-Tenant-ID",
        "operations[2].headers.X-API-Key",
    ]
    # Without a batch, no header: the caller's credentials are what every operation has.
    answer = await batch(client, viewer, [op("POST", "/api/v1/tenants", {"name": unique("t")})])
    error_in(answer["results"][0], 403, "PERMISSION_DENIED")


async def test_batches_that_cannot_run_are_refused_before_anything_runs(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("batch-refused"), "editor")
    pid = (await create_pipeline(client, editor, "kept"))["id"]
    canary = unique("canary")
    create = op("POST", "/api/v1/pipelines", pipeline_body(canary))

    async def refused(body: dict[str, Any], headers: Headers = editor) -> list[str]:
        response = await client.post(BATCH, json=body, headers=headers)
        error = assert_error(response, 422, "VALIDATION_ERROR")
        return [d["field"] for d in error["details"]]

    assert await refused({"operations": [create] * 101}) == ["operations"]
    assert await refused({"operations": []}) == ["operations"]
    assert await refused(
        {
            "operations": [
                create,
                op("GET", "pipelines"),
                op("GET", "/api/v2/pipelines"),
                op("GET", "http://elsewhere/api/v1/pipelines"),
                op("POST", "/api/v1/batch", {"operations": []}),
                op("GET", "/api/v1/events/stream"),
                op("GET", "/api/v1/../health"),
                op("GET", "/api/v1/runs/export?format=csv"),
            ]
        }
    ) == [f"operations[{i}].path" for i in range(1, 8)]
    assert await refused({"operations": [op("HEAD", "/api/v1/pipelines")]}) == [
        "operations[0].method"
    ]
    # Atomic: writes of pipelines and jobs only, no Idempotency-Key.
    assert await refused(
        {
            "atomic": True,
            "operations": [
                create,
                op("GET", "/api/v1/pipelines"),
                op("POST", f"/api/v1/pipelines/{pid}/runs", {"params": {}}),
                op("POST", "/api/v1/pipelines/execute", {"pipeline_id": pid}),
                op("POST", "/api/v1/secrets", {"name": "s", "value": "v"}),
                op("POST", f"/api/v1/pipelines/{pid}:validate"),
                op("PUT", f"/api/v1/pipelines/{pid}", pipeline_body("kept"), Idempotency_Key="k"),
                op("POST", f"/api/v1/pipelines/{pid}/rollback", {"revision": 1, "redeploy": True}),
            ],
        }
    ) == [f"operations[{i}].path" for i in range(1, 6)] + [
        "operations[6].headers.Idempotency-Key",
        "operations[7].body.redeploy",
    ]
    # The batch itself takes no Idempotency-Key: each operation takes its own.
    response = await client.post(
        BATCH, json={"operations": [create]}, headers={**editor, "Idempotency-Key": "b-1"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    # None of these ran the create that came first.
    assert events_named(module_settings, canary) == []


async def test_each_operation_takes_its_own_idempotency_key(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("batch-idem"), "editor")
    name = unique("once")
    operations = [
        op("POST", "/api/v1/pipelines", pipeline_body(name), Idempotency_Key="create-once"),
        op("POST", "/api/v1/pipelines", pipeline_body(unique("each-time"))),
    ]
    first = await batch(client, editor, operations)
    again = await batch(client, editor, operations)
    assert [r["status"] for r in first["results"]] == [201, 201]
    assert [r["status"] for r in again["results"]] == [201, 409]  # the second: name taken
    assert again["results"][0]["body"] == first["results"][0]["body"]
    assert again["results"][0]["headers"]["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first["results"][0]["headers"]
    created = [t for _, _, t in events_named(module_settings, name) if "PipelineCreated" in t]
    assert len(created) == 1
    # Sent alone, the same key and request replay the batch operation's answer.
    alone = await client.post(
        "/api/v1/pipelines",
        json=pipeline_body(name),
        headers={**editor, "Idempotency-Key": "create-once"},
    )
    assert alone.status_code == 201 and alone.json() == first["results"][0]["body"]


async def test_every_operation_counts_against_the_rate_limit(settings: Settings) -> None:
    limits = "free=20/6,pro=40/8,enterprise=80/10,platform=100000/1000"
    limited = replace(settings, rate_limits=limits)
    async with running_app(limited) as client:
        admin = await admin_of(client, limited)
        _, editor = await make_tenant_user(client, admin, "acme", "editor")
        # The login took no token; the batch itself takes one and each operation one.
        answer = await client.post(
            BATCH, json={"operations": [op("GET", "/api/v1/pipelines")] * 7}, headers=editor
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results] == [200] * 5 + [429] * 2
        limited_one = error_in(results[5], 429, "RATE_LIMIT_EXCEEDED")
        assert "rate limit" in limited_one["message"]
        assert int(results[5]["headers"]["retry-after"]) >= 1
        assert [r["headers"]["x-ratelimit-remaining"] for r in results[:5]] == [
            "4",
            "3",
            "2",
            "1",
            "0",
        ]
        # The batch answers the bucket as its operations left it.
        assert answer.headers["x-ratelimit-remaining"] == "0"
        # And the next request, alone or batched, is refused as a whole.
        refused = await client.post(
            BATCH, json={"operations": [op("GET", "/api/v1/pipelines")]}, headers=editor
        )
        assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")


async def test_an_atomic_batch_appends_all_its_events_in_one_transaction(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("batch-atomic"), "editor")
    kept = await create_pipeline(client, editor, "kept")
    doomed = await create_pipeline(client, editor, "doomed")
    kid = kept["id"]
    first, second = unique("first"), unique("second")
    answer = await batch(
        client,
        editor,
        [
            op("POST", "/api/v1/pipelines", pipeline_body(first)),
            op("POST", "/api/v1/pipelines", pipeline_body(second)),
            # The same pipeline three times: each sees what the one before decided.
            op(
                "PUT", f"/api/v1/pipelines/{kid}", pipeline_body("kept", tags=["a"]), If_Match='"1"'
            ),
            op(
                "PUT", f"/api/v1/pipelines/{kid}", pipeline_body("kept", tags=["b"]), If_Match='"2"'
            ),
            op("POST", f"/api/v1/pipelines/{kid}:rollback", {"revision": 1}),
            op("DELETE", f"/api/v1/pipelines/{doomed['id']}"),
            op(
                "POST",
                "/api/v1/scheduler/jobs",
                {"name": "nightly", "target": {"pipeline_id": kid}, "cron_expr": "0 6 * * *"},
            ),
        ],
        atomic=True,
    )
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 201, 200, 200, 200, 200, 201], answer
    assert answer["atomic"] is True and answer["committed"] is True
    position = answer["position"]
    assert isinstance(position, int) and position > doomed["position"]
    # Every operation answers the commit's position and the versions it left.
    assert {r["body"]["position"] for r in results} == {position}
    assert [r["body"]["version"] for r in results[2:5]] == [2, 3, 4]
    assert [r["headers"]["etag"] for r in results[2:4]] == ['"2"', '"3"']
    assert (results[4]["body"]["revision"], results[4]["body"]["previous_revision"]) == (4, 3)
    # One transaction, consecutive positions, ending at the answered one.
    stored = appended_with(module_settings, position)
    positions = [p for p, _ in stored]
    assert positions[-1] == position
    assert positions == list(range(positions[0], position + 1))
    topics = [t.rsplit(":", 1)[-1] for _, t in stored]
    for topic, count in [
        ("PipelineCreated", 2),
        ("PipelineRevised", 2),
        ("PipelineRolledBack", 1),
        ("PipelineDeleted", 1),
        ("JobCreated", 1),
        ("UsageShardTaken", 3),  # two pipelines and the job, from the process's shards
        ("UsageShardReleased", 1),  # the deleted pipeline
    ]:
        assert topics.count(topic) == count, (topic, topics)
    assert {p for p, _, _ in events_named(module_settings, first)} <= set(positions)
    # The read models see the batch's writes at its position.
    job = results[6]["body"]
    read = await client.get(
        f"/api/v1/scheduler/jobs/{job['id']}", params={"min_position": position}, headers=editor
    )
    assert read.status_code == 200 and read.json()["name"] == "nightly"
    gone = await client.get(
        f"/api/v1/pipelines/{doomed['id']}", params={"min_position": position}, headers=editor
    )
    assert gone.status_code == 404


async def test_an_atomic_batch_with_a_failing_operation_appends_nothing(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    tenant_id, editor = await make_tenant_user(client, admin, unique("batch-none"), "editor")
    quotas = await client.put(
        f"/api/v1/tenants/{tenant_id}/quotas", json={"max_pipelines": 3}, headers=admin
    )
    assert quotas.status_code == 200, quotas.text
    kept = await create_pipeline(client, editor, "kept")
    kid, lost = kept["id"], unique("lost")
    answer = await batch(
        client,
        editor,
        [
            op("POST", "/api/v1/pipelines", pipeline_body(lost)),
            op(
                "PUT", f"/api/v1/pipelines/{kid}", pipeline_body("kept", tags=["x"]), If_Match='"1"'
            ),
            op("POST", "/api/v1/pipelines", pipeline_body("kept")),  # the name is taken
            op("DELETE", f"/api/v1/pipelines/{kid}"),
        ],
        atomic=True,
    )
    assert answer["committed"] is False and answer["position"] is None
    results = answer["results"]
    assert [r["status"] for r in results] == [424, 424, 409, 424]
    applied = error_in(results[0], 424, "FAILED_DEPENDENCY")
    assert applied["message"].startswith("not applied: operation 2")
    assert error_in(results[3], 424, "FAILED_DEPENDENCY")["message"].startswith("not run")
    error_in(results[2], 409, "RESOURCE_CONFLICT")
    # Nothing of the operations that ran before the failure was stored.
    assert events_named(module_settings, lost) == []
    history = await client.get(f"/api/v1/pipelines/{kid}/history", headers=editor)
    assert [h["revision"] for h in history.json()["items"]] == [1]

    # Two creates of one name: the second sees the first's claim (409); none is stored.
    twice = unique("twice")
    create = op("POST", "/api/v1/pipelines", pipeline_body(twice))
    answer = await batch(client, editor, [create, create], atomic=True)
    assert [r["status"] for r in answer["results"]] == [424, 409]
    assert events_named(module_settings, twice) == []

    # The quota (3, one used) counts what the batches took and dropped as not taken: two
    # more fit, and within one batch the third sees the two before it (409, none stored).
    three = [op("POST", "/api/v1/pipelines", pipeline_body(unique("q"))) for _ in range(3)]
    answer = await batch(client, editor, three, atomic=True)
    assert [r["status"] for r in answer["results"]] == [424, 424, 409]
    error_in(answer["results"][2], 409, "QUOTA_EXCEEDED")
    answer = await batch(client, editor, three[:2], atomic=True)
    assert [r["status"] for r in answer["results"]] == [201, 201]
    over = await client.post("/api/v1/pipelines", json=pipeline_body("over"), headers=editor)
    assert_error(over, 409, "QUOTA_EXCEEDED")


async def test_an_operation_of_an_atomic_batch_needs_its_own_role(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    _, operator = await make_tenant_user(client, admin, unique("batch-atomic-role"), "operator")
    _, owner = await make_tenant_user(client, admin, unique("batch-atomic-owner"), "editor")
    theirs = await create_pipeline(client, owner, "theirs")
    # An operator may pause jobs but not create pipelines: the batch stops at the create.
    answer = await batch(
        client,
        operator,
        [op("POST", "/api/v1/pipelines", pipeline_body(unique("nope")))],
        atomic=True,
    )
    error_in(answer["results"][0], 403, "PERMISSION_DENIED")
    # Another tenant's pipeline does not exist for this one, in a batch as alone.
    _, editor = await make_tenant_user(client, admin, unique("batch-atomic-other"), "editor")
    answer = await batch(
        client,
        editor,
        [
            op("POST", "/api/v1/pipelines", pipeline_body(unique("mine"))),
            op("DELETE", f"/api/v1/pipelines/{theirs['id']}"),
        ],
        atomic=True,
    )
    assert [r["status"] for r in answer["results"]] == [424, 404]
    still = await client.get(f"/api/v1/pipelines/{theirs['id']}", headers=owner)
    assert still.status_code == 200


async def test_an_atomic_batch_places_pipelines_in_namespaces(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await admin_of(client, module_settings)
    tenant_id, editor = await make_tenant_user(client, admin, unique("batch-ns"), "editor")
    for namespace in ("prod", "staging"):
        added = await client.post(
            f"/api/v1/tenants/{tenant_id}/namespaces", json={"namespace": namespace}, headers=admin
        )
        assert added.status_code in (200, 201), added.text
    answer = await batch(
        client,
        editor,
        [
            op("POST", "/api/v1/pipelines", pipeline_body("a", namespace="prod")),
            op("POST", "/api/v1/pipelines", pipeline_body("b", namespace="staging")),
            op("POST", "/api/v1/pipelines", pipeline_body("c", namespace="prod")),
        ],
        atomic=True,
    )
    assert [r["status"] for r in answer["results"]] == [201, 201, 201], answer
    assert answer["committed"] is True
    # A namespace that does not exist is the operation's 422, as alone.
    answer = await batch(
        client,
        editor,
        [op("POST", "/api/v1/pipelines", pipeline_body("d", namespace="nowhere"))],
        atomic=True,
    )
    error_in(answer["results"][0], 422, "VALIDATION_ERROR")
