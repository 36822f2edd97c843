"""The msgspec mapper (domain event <-> stored event, with upcasting) and the CloudEvents
envelope built from a stored-event notification. No I/O: stored events are built in
memory."""

from __future__ import annotations

import inspect
import threading
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    JSONTranscoder,
    MapperDeserialisationError,
    Notification,
    StoredEvent,
)
from eventsourcing.utils import get_topic

import domain.api_key
import domain.connection
import domain.deployment
import domain.event_trigger
import domain.name_claim
import domain.pipeline
import domain.pipeline_deployments
import domain.run
import domain.secret
import domain.session
import domain.tenant
import domain.user
import domain.webhook
from domain.api_key import ApiKey
from domain.connection import Connection
from domain.deployment import Deployment
from domain.event_trigger import EventTrigger, TriggerFiring, TriggerSource
from domain.events import CommandContext, NornEvent
from domain.name_claim import NameClaim, NameClaimTaken
from domain.pipeline import (
    ClonedFrom,
    Pipeline,
    PipelineDefinition,
    PipelineRevised,
    StepSpec,
)
from domain.pipeline_deployments import PipelineDeployments
from domain.release import Strategy
from domain.run import Run, RunCancelled, RunStatus, Trigger
from domain.secret import Secret
from domain.session import Session
from domain.tenant import EnvironmentPolicy, Quotas, Tenant
from domain.user import User, UserRegistered
from domain.webhook import Webhook
from infrastructure.envelope import (
    PLATFORM_TENANT,
    CloudEvent,
    decode,
    encode,
    event_id,
    subject_for,
    to_cloud_event,
)
from infrastructure.mapper import MsgspecMapper, decode_state

CTX = CommandContext("user:u1", "corr-1", "cause-1")
TENANT = "tenant-1"
MAPPER = MsgspecMapper(JSONTranscoder())  # the transcoder is unused: msgspec does the work


def no_problems(step: StepSpec) -> list[str]:
    return []


DEFINITION = PipelineDefinition(
    name="orders",
    description="daily",
    tags=("sales",),
    steps=(
        StepSpec("extract", "Input.file", {"path": "in.jsonl", "nested": {"n": [1, 2.5]}}),
        StepSpec("load", "Output.file", {"path": "out.jsonl"}, ("extract",)),
    ),
)


def one_of_every_event() -> list[NornEvent]:
    pipeline = Pipeline.create(
        pipeline_id=uuid4(),
        tenant_id=TENANT,
        definition=DEFINITION,
        check_plugin=no_problems,
        ctx=CTX,
        cloned_from=ClonedFrom(pipeline_id=str(uuid4()), revision=2),
    )
    pipeline.revise(PipelineDefinition(name="orders-2", steps=DEFINITION.steps), no_problems, CTX)
    pipeline.roll_back(1, DEFINITION, CTX)
    pipeline.shred_credentials(DEFINITION.steps, CTX)
    pipeline.delete(CTX)
    tenant = Tenant.create(
        tenant_id=uuid4(),
        name="Acme",
        description="",
        plan="pro",
        labels={"region": "eu"},
        owner="ops@acme.example",
        ctx=CTX,
    )
    tenant.update(name="Acme Inc", description="d", labels={}, owner="", ctx=CTX)
    tenant.change_plan("enterprise", CTX)
    tenant.set_quotas(Quotas(max_pipelines=7), CTX)
    tenant.add_namespace("dev", CTX)
    tenant.remove_namespace("dev", CTX)
    tenant.set_environment_policy("prod", EnvironmentPolicy(protected=True), CTX)
    tenant.suspend("unpaid", CTX)
    tenant.reactivate(CTX)
    tenant.delete(CTX)
    user = User.register(
        username="alice",
        password_hash="$argon2id$secret-hash",
        tenant_id=TENANT,
        roles=("editor", "viewer"),
        ctx=CTX,
    )
    user.change_roles(("viewer",), CTX)
    user.set_active(False, CTX)
    user.set_active(True, CTX)
    user.change_password("$argon2id$other-hash", CTX)
    user.delete(CTX)
    session = Session.start(
        session_id=uuid4(),
        user_id=str(user.id),
        tenant_id=TENANT,
        credentials_version=1,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        ctx=CTX,
    )
    session.rotate(1, datetime(2029, 1, 1, tzinfo=UTC), CTX)
    session.end("logout", CTX)
    api_key = ApiKey.create(
        tenant_id=TENANT,
        name="ci",
        prefix="abcdefghij",
        secret_hash="sha256:0",
        roles=("viewer",),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        now=datetime(2029, 1, 1, tzinfo=UTC),
        ctx=CTX,
    )
    api_key.revoke(CTX)
    run = Run.queue(
        run_id=uuid4(),
        tenant_id=TENANT,
        pipeline_id="p1",
        pipeline_name="orders",
        revision=1,
        definition=DEFINITION,
        params={"day": "2026-11-23", "n": [1, 2.5]},
        trigger=Trigger("user", "u1"),
        ctx=CTX,
    )
    first = run.start("x1", CTX)
    run.start_step("extract", first, CTX)
    run.step_failed("extract", first, "boom", 0.5, CTX)
    run.start_step("extract", first, CTX)
    run.step_failed("extract", first, "boom", None, CTX)
    run.shred_credentials(DEFINITION.steps, CTX)
    run.request_cancel("stop", CTX)
    run.recover(first, "lost", CTX)  # cancelled: a cancel was requested
    run.record_retry(uuid4(), CTX)
    others = []
    for outcome in ("succeeded", "timed_out", "requeued", "crashed"):
        other = Run.queue(
            run_id=uuid4(),
            tenant_id=TENANT,
            pipeline_id="p1",
            pipeline_name="orders",
            revision=1,
            definition=DEFINITION,
            params={},
            trigger=Trigger("job", "j1"),
            ctx=CTX,
            max_attempts=1,
        )
        attempt = other.start("x2", CTX)
        if outcome == "succeeded":
            for step in ("extract", "load"):
                other.start_step(step, attempt, CTX)
                other.step_succeeded(step, attempt, 1, 1, CTX)
            other.finish(attempt, CTX)
        elif outcome == "timed_out":
            other.timed_out(attempt, 5.0, CTX)
        elif outcome == "requeued":
            other.release(attempt, "shutdown", CTX)
        else:
            other.recover(attempt, "lost", CTX)
        others.extend(other.collect_events())
    failing = Run.queue(
        run_id=uuid4(),
        tenant_id=TENANT,
        pipeline_id="p1",
        pipeline_name="orders",
        revision=1,
        definition=DEFINITION,
        params={},
        trigger=Trigger("api_key", "k1"),
        ctx=CTX,
    )
    attempt = failing.start("x3", CTX)
    failing.start_step("extract", attempt, CTX)
    failing.step_failed("extract", attempt, "bad", None, CTX)
    failing.finish(attempt, CTX)
    claim = NameClaim.claim_new(
        tenant_id=TENANT, scope=f"pipeline:{TENANT}", name="orders", holder_id="p1", ctx=CTX
    )
    claim.release("p1", CTX)
    claim.claim("p2", CTX)
    return [
        *pipeline.collect_events(),
        *tenant.collect_events(),
        *user.collect_events(),
        *session.collect_events(),
        *api_key.collect_events(),
        *run.collect_events(),
        *others,
        *failing.collect_events(),
        *claim.collect_events(),
        *deployment_events(),
        *trigger_events(),
        *webhook_events(),
        *secret_events(),
        *connection_events(),
    ]


def webhook_events() -> list[NornEvent]:
    hook = Webhook.create(
        webhook_id=uuid4(),
        tenant_id=TENANT,
        url="https://hooks.example.com/n",
        events=("norn.run.*",),
        secret_generated=True,
        ctx=CTX,
    )
    hook.update(CTX, description="ops", events=("norn.*",))
    hook.deactivate(CTX)
    hook.activate(CTX)
    hook.disable(CTX, "20 consecutive failed deliveries")
    hook.rotate_secret(CTX, generated=False)
    hook.delete(CTX)
    return list(hook.collect_events())


def trigger_events() -> list[NornEvent]:
    source = TriggerSource(str(uuid4()), "norn.run.succeeded.v1", 41, 2)
    fired = TriggerFiring.fired(
        tenant_id=TENANT, pipeline_id="p1", revision=3, source=source, run_id=uuid4(), ctx=CTX
    )
    refused = TriggerFiring.refused_by(
        tenant_id=TENANT,
        pipeline_id="p1",
        deployment_id="d1",
        revision=3,
        source=source,
        code="CHAIN_TOO_DEEP",
        reason="too deep",
        ctx=CTX,
    )
    return [*fired.collect_events(), *refused.collect_events()]


def secret_events() -> list[NornEvent]:
    secret = Secret.create(
        tenant_id=TENANT,
        name="db-password",
        value_id=uuid4(),
        ctx=CTX,
        description="the warehouse",
        allowed_hosts=("db.example.com",),
        namespaces=("dev",),
    )
    secret.add_version(CTX, uuid4())
    secret.update(CTX, description="changed")
    secret.delete(CTX, forced=True)
    secret.recreate(CTX, value_id=uuid4())
    return list(secret.collect_events())


def connection_events() -> list[NornEvent]:
    config = {"host": {"secret": "db-host"}, "database": "orders", "port": 5433}
    connection = Connection.create(
        tenant_id=TENANT, name="warehouse", type_="postgres", config=config, ctx=CTX
    )
    connection.update(CTX, config={**config, "sslmode": "require"}, description="changed")
    connection.delete(CTX, forced=True)
    connection.recreate(CTX, type_="http", config={"base_url": "https://api.example.com"})
    return list(connection.collect_events())


def deployment_events() -> list[NornEvent]:
    green = Strategy(type="blue-green", verification_timeout=60, verification_params={"n": 1})
    deployment = Deployment.create(
        deployment_id=uuid4(),
        tenant_id=TENANT,
        pipeline_id="p1",
        environment="prod",
        strategy=green,
        variables={"region": "eu"},
        labels={"team": "data"},
        ctx=CTX,
    )
    deployment.release(1, CTX, run_id="r1")
    deployment.record_verification(1, "r1", RunStatus.SUCCEEDED, datetime.now(UTC), CTX)
    deployment.release(2, CTX, strategy=green, run_id="r2")
    deployment.expire_verification(2, datetime(2100, 1, 1, tzinfo=UTC), CTX)
    deployment.release(3, CTX, strategy=Strategy())
    deployment.set_triggers(
        (EventTrigger("norn.run.succeeded", {"pipeline_id": "p0", "ok": True}, {"n": 1}),), CTX
    )
    deployment.roll_back(CTX)
    deployment.retire(CTX)
    live = PipelineDeployments.open(tenant_id=TENANT, pipeline_id="p1", ctx=CTX)
    live.count("d1", CTX)
    live.uncount("d1", CTX)
    live.close(CTX)
    return [*deployment.collect_events(), *live.collect_events()]


def concrete_domain_event_classes() -> set[type]:
    modules = (
        domain.api_key,
        domain.connection,
        domain.deployment,
        domain.event_trigger,
        domain.pipeline_deployments,
        domain.name_claim,
        domain.pipeline,
        domain.run,
        domain.secret,
        domain.session,
        domain.tenant,
        domain.user,
        domain.webhook,
    )
    found = set()
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, NornEvent)
                and obj.__module__ == module.__name__
                and not obj.__subclasses__()
            ):
                found.add(obj)
    return found


# --- mapper -----------------------------------------------------------------------------


def test_the_round_trip_covers_every_domain_event_class() -> None:
    assert {type(e) for e in one_of_every_event()} == concrete_domain_event_classes()


@pytest.mark.parametrize("event", one_of_every_event(), ids=lambda e: type(e).__name__)
def test_every_event_round_trips_to_an_equal_event(event: NornEvent) -> None:
    stored = MAPPER.to_stored_event(event)

    back = MAPPER.to_domain_event(stored)

    assert type(back) is type(event)
    assert back == event
    assert stored.originator_id == event.originator_id
    assert stored.originator_version == event.originator_version
    assert stored.topic == get_topic(type(event))


@pytest.mark.parametrize("event", one_of_every_event(), ids=lambda e: type(e).__name__)
def test_round_tripped_fields_have_their_declared_types(event: NornEvent) -> None:
    back = MAPPER.to_domain_event(MAPPER.to_stored_event(event))

    assert isinstance(back.originator_id, UUID)
    assert isinstance(back.timestamp, datetime)
    assert back.timestamp.utcoffset() is not None
    assert back.timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert back.timestamp == event.timestamp
    if hasattr(back, "definition"):
        assert isinstance(back.definition, PipelineDefinition)
        assert all(isinstance(s, StepSpec) for s in back.definition.steps)
        assert isinstance(back.definition.steps[1].depends_on, tuple)
    if getattr(back, "cloned_from", None) is not None:
        assert isinstance(back.cloned_from, ClonedFrom)
    if isinstance(back, UserRegistered):
        assert back.roles == ("editor", "viewer")


def test_stored_state_holds_the_payload_and_metadata_but_not_the_originator() -> None:
    event = next(e for e in one_of_every_event() if isinstance(e, PipelineRevised))

    state = decode_state(MAPPER.to_stored_event(event).state)

    assert state["revision"] == 2
    assert state["definition"]["name"] == "orders-2"
    assert (state["tenant_id"], state["actor"]) == (TENANT, "user:u1")
    assert (state["correlation_id"], state["causation_id"]) == ("corr-1", "cause-1")
    assert "originator_id" not in state
    assert "originator_version" not in state
    assert "class_version" not in state  # only written for versions above 1


@pytest.mark.parametrize(
    "state",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"timestamp": "2024-01-01T00:00:00Z"}',  # required fields missing
        b'{"timestamp": "yesterday", "tenant_id": "t", "actor": "a", "correlation_id": "c",'
        b' "causation_id": null, "revision": 2, "definition": {"name": "x"}}',
        b'{"timestamp": "2024-01-01T00:00:00Z", "tenant_id": "t", "actor": "a",'
        b' "correlation_id": "c", "causation_id": null, "revision": "two",'
        b' "definition": {"name": "x"}}',
    ],
)
def test_unreadable_stored_state_raises_mapper_deserialisation_error(state: bytes) -> None:
    originator_id = uuid4()
    stored = StoredEvent(originator_id, 2, get_topic(PipelineRevised), state)

    with pytest.raises(MapperDeserialisationError) as error:
        MAPPER.to_domain_event(stored)

    assert get_topic(PipelineRevised) in str(error.value)
    assert f"{originator_id}@2" in str(error.value)


# An event whose payload evolved twice: v1 had only `title`; v2 added `colour`; v3 added
# `size`, derived from the colour (so the upcasters must run in order).


class GadgetRepainted(NornEvent):
    aggregate_type: ClassVar[str] = "gadget"
    class_version: ClassVar[int] = 3

    title: str
    colour: str
    size: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["colour"] = "grey"

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["size"] = "large" if state["colour"] == "grey" else "small"


def _old_state(**payload: Any) -> bytes:
    return msgspec.json.encode(
        {
            "timestamp": "2024-05-06T07:08:09.123456Z",
            "tenant_id": TENANT,
            "actor": "user:old",
            "correlation_id": "corr-old",
            "causation_id": None,
            **payload,
        }
    )


def test_a_stored_v1_event_is_upcast_through_every_version() -> None:
    originator_id = uuid4()
    stored = StoredEvent(originator_id, 4, get_topic(GadgetRepainted), _old_state(title="t"))

    event = MAPPER.to_domain_event(stored)

    assert isinstance(event, GadgetRepainted)
    assert (event.title, event.colour, event.size) == ("t", "grey", "large")
    assert (event.originator_id, event.originator_version) == (originator_id, 4)
    assert event.actor == "user:old"
    assert event.timestamp.utcoffset() is not None


def test_a_stored_v2_event_is_upcast_from_v2_only() -> None:
    state = _old_state(title="t", colour="red", class_version=2)
    stored = StoredEvent(uuid4(), 1, get_topic(GadgetRepainted), state)

    event = MAPPER.to_domain_event(stored)

    assert (event.colour, event.size) == ("red", "small")


def test_a_status_stored_as_a_plain_string_decodes_to_its_enum_and_stores_the_same_bytes() -> None:
    """Statuses became str-valued enums after events carrying them were stored: those
    events still decode, and an event stored now holds the very same JSON string."""
    state = _old_state(reason="cancelled by user:u1", previous_status="queued")
    stored = StoredEvent(uuid4(), 2, get_topic(RunCancelled), state)

    event = MAPPER.to_domain_event(stored)

    assert isinstance(event, RunCancelled)
    assert event.previous_status is RunStatus.QUEUED
    again = MAPPER.to_stored_event(event)
    assert msgspec.json.decode(again.state)["previous_status"] == "queued"
    assert b'"previous_status":"queued"' in again.state
    assert again.state == msgspec.json.encode(msgspec.json.decode(state))


def test_a_current_version_event_records_its_class_version_and_is_not_upcast() -> None:
    event = GadgetRepainted(  # type: ignore[call-arg]
        originator_id=uuid4(),
        originator_version=2,
        timestamp=datetime.fromisoformat("2024-01-01T00:00:00+00:00"),
        tenant_id=TENANT,
        actor="user:u1",
        correlation_id="corr-1",
        causation_id=None,
        title="t",
        colour="blue",
        size="tiny",
    )

    stored = MAPPER.to_stored_event(event)

    assert decode_state(stored.state)["class_version"] == 3
    back = MAPPER.to_domain_event(stored)
    assert back == event
    assert GadgetRepainted.type_name() == "norn.gadget.repainted.v3"


# --- envelope ---------------------------------------------------------------------------


def notification(event: NornEvent, position: int = 42) -> Notification:
    stored = MAPPER.to_stored_event(event)
    return Notification(
        id=position,
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=stored.state,
    )


def revised_event() -> PipelineRevised:
    return next(e for e in one_of_every_event() if isinstance(e, PipelineRevised))


def test_cloud_event_carries_the_attributes_and_extensions() -> None:
    event = revised_event()

    cloud = to_cloud_event(notification(event, position=42))

    assert cloud.specversion == "1.0"
    assert cloud.id == event_id(event.originator_id, 2)
    assert cloud.source == f"/tenants/{TENANT}/pipelines/{event.originator_id}"
    assert cloud.type == "norn.pipeline.revised.v1"
    assert cloud.subject == str(event.originator_id)
    assert cloud.time == event.timestamp
    assert cloud.datacontenttype == "application/json"
    assert cloud.position == 42
    assert cloud.version == 2
    assert cloud.tenant == TENANT
    assert cloud.actor == "user:u1"
    assert cloud.correlationid == "corr-1"
    assert cloud.causationid == "cause-1"


def test_cloud_event_data_is_the_payload_without_envelope_metadata() -> None:
    event = revised_event()

    cloud = to_cloud_event(notification(event))

    assert set(cloud.data) == {"revision", "definition"}
    assert cloud.data["revision"] == 2
    assert cloud.data["definition"]["name"] == "orders-2"
    assert cloud.data["definition"]["steps"][1]["depends_on"] == ["extract"]


def test_a_run_that_ended_publishes_its_outcome_in_data() -> None:
    """README "Consuming events from NATS": enough to act on without calling back."""
    run = Run.queue(
        run_id=uuid4(),
        tenant_id=TENANT,
        pipeline_id="p1",
        pipeline_name="orders",
        revision=4,
        definition=DEFINITION,
        params={},
        trigger=Trigger("job", "j1"),
        ctx=CTX,
    )
    run.request_cancel("not today", CTX)
    ended = run.collect_events()[-1]

    data = decode(encode(to_cloud_event(notification(ended)))).data

    assert data["pipeline_id"] == "p1" and data["pipeline_name"] == "orders"
    assert data["revision"] == 4 and data["job_id"] == "j1" and data["trigger"] == "job"
    assert data["status"] == "cancelled" and data["message"] == "not today"
    assert data["duration_seconds"] is None and data["deployment_id"] is None


def test_cloud_event_id_is_deterministic_per_originator_and_version() -> None:
    events = one_of_every_event()
    revised = next(e for e in events if isinstance(e, PipelineRevised))

    first = to_cloud_event(notification(revised, position=10))
    again = to_cloud_event(notification(revised, position=99))  # re-read, re-published

    assert first.id == again.id
    assert UUID(first.id).version == 5
    other_version = to_cloud_event(notification(events[0]))
    assert other_version.id != first.id
    assert event_id(revised.originator_id, 2) != event_id(uuid4(), 2)


def test_private_fields_are_not_published() -> None:
    registered = next(e for e in one_of_every_event() if isinstance(e, UserRegistered))

    cloud = to_cloud_event(notification(registered))

    assert "password_hash" not in cloud.data
    assert b"secret-hash" not in encode(cloud)
    assert cloud.data == {"username": "alice", "roles": ["editor", "viewer"]}
    assert cloud.type == "norn.user.registered.v1"


def test_an_event_without_a_tenant_is_published_as_a_platform_event() -> None:
    admin = User.register(
        username="root",
        password_hash="h",
        tenant_id=None,
        roles=("platform_admin",),
        ctx=CTX,
    )
    [event] = admin.collect_events()

    cloud = to_cloud_event(notification(event))

    assert cloud.tenant is None
    assert cloud.source == f"/platform/users/{event.originator_id}"
    assert subject_for("norn", cloud) == "norn.events._platform.user.registered"
    assert PLATFORM_TENANT == "_platform"


def test_subject_names_prefix_tenant_aggregate_and_event() -> None:
    cloud = to_cloud_event(notification(revised_event()))

    assert subject_for("norn", cloud) == f"norn.events.{TENANT}.pipeline.revised"
    assert subject_for("t0abc", cloud) == f"t0abc.events.{TENANT}.pipeline.revised"


def test_subject_of_a_name_claim_event() -> None:
    taken = next(e for e in one_of_every_event() if isinstance(e, NameClaimTaken))

    cloud = to_cloud_event(notification(taken))

    assert cloud.type == "norn.name_claim.taken.v1"
    assert subject_for("norn", cloud) == f"norn.events.{TENANT}.name_claim.taken"


def test_the_envelope_encodes_as_structured_cloud_events_json_and_decodes_back() -> None:
    cloud = to_cloud_event(notification(revised_event(), position=7))

    raw = msgspec.json.decode(encode(cloud))
    assert raw["specversion"] == "1.0"
    assert raw["time"].endswith("Z")
    for extension in ("position", "version", "tenant", "actor", "correlationid", "causationid"):
        assert extension in raw  # extensions are top-level attributes
    assert raw["position"] == 7
    assert decode(encode(cloud)) == cloud
    assert isinstance(decode(encode(cloud)), CloudEvent)


class NotNorn(Aggregate.Event):
    pass


def test_the_envelope_refuses_an_event_that_is_not_a_norn_event() -> None:
    stored = Notification(
        id=1,
        originator_id=uuid4(),
        originator_version=1,
        topic=get_topic(NotNorn),
        state=b'{"timestamp": "2024-01-01T00:00:00Z"}',
    )

    with pytest.raises(TypeError, match="is not a Norn event"):
        to_cloud_event(stored)


def test_an_event_is_encoded_once_for_every_feed_that_sends_it() -> None:
    from infrastructure import envelope

    cloud = to_cloud_event(notification(revised_event()))
    first = envelope.text_of(cloud)

    assert envelope.text_of(cloud) is first  # the same text, not encoded again
    assert decode(first.encode()) == cloud
    for n in range(envelope._TEXTS_KEPT + 10):  # bounded: the oldest go first
        envelope.text_of(msgspec.structs.replace(cloud, id=f"other-{n}"))
    assert len(envelope._TEXTS) == envelope._TEXTS_KEPT
    assert envelope.text_of(cloud) is not first


def test_within_encoded_once_an_event_given_again_is_encoded_once_in_its_thread() -> None:
    """An append tried again after a lost race gives the same event objects: their stored
    form is kept by identity for the block, in the thread that opened it, and only then."""
    event, other = one_of_every_event()[:2]
    seen_elsewhere: list[bool] = []
    with MAPPER.encoded_once():
        first = MAPPER.to_stored_event(event)
        assert MAPPER.to_stored_event(event) is first
        assert MAPPER.to_stored_event(other) is not first
        worker = threading.Thread(
            target=lambda: seen_elsewhere.append(MAPPER.to_stored_event(event) is first)
        )
        worker.start()
        worker.join()
    assert seen_elsewhere == [False]
    again = MAPPER.to_stored_event(event)
    assert again is not first and again == first
