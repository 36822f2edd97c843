"""Secret references in step configs (README "Secrets in step configs"): where they may
stand, credentials refused in clear, secrets checked at save and resolved only where the
step runs, their limits (namespaces, hosts) enforced both times, and every text the
step produces masked. On the in-memory store, through the real PipelineService,
PluginStepRunner and RunExecutor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from application.principal import Principal
from domain.errors import InvalidDefinition
from infrastructure import secret_references as refs
from infrastructure.plugins import network
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.plugins.sensitive import secrecy_of
from infrastructure.plugins.webhook import OutputWebhook
from tests.support.runs import CTX, RunWorld, step

TOKEN = "tok-Distinctive-4c1e9b"
NEWER = "tok-Newer-Distinctive-77aa"


@pytest.fixture
def world(tmp_path: Path) -> RunWorld:
    world = RunWorld(tmp_path)
    admin = Principal("u2", "root", world.tenant_id, frozenset({"admin"}), tenant_status="active")
    world.secrets.create(admin, CTX, name="api-token", value=TOKEN)
    world.admin = admin  # type: ignore[attr-defined]
    return world


def credential(**config: object) -> object:
    return step("use", "Test.credential", config=dict(config))


def problems(world: RunWorld, *steps: object, **fields: object) -> list[str]:
    with pytest.raises(InvalidDefinition) as raised:
        world.pipeline("p", *steps, **fields)  # type: ignore[arg-type]
    return [f"{e.field}: {e.message}" for e in raised.value.errors]


# --- the marks and the pure rules ------------------------------------------------------------


def test_plugin_schemas_mark_credentials_and_header_values() -> None:
    secrecy = secrecy_of(OutputWebhook.Config)
    assert secrecy.requires(("secret",)) and secrecy.requires(("headers", "AUTHORIZATION"))
    assert secrecy.accepts(("headers", "X-Trace")) and not secrecy.requires(("headers", "X-Trace"))
    assert not secrecy.accepts(("url",))
    schema = PluginCatalog().get("Output.webhook").config_schema()  # type: ignore[union-attr]
    assert '"x-norn-secret": "required"' in str(schema).replace("'", '"')


@pytest.mark.parametrize(
    ("value", "is_one"),
    [
        ({"secret": "a"}, True),
        ({"secret": "a", "version": 2}, True),
        ({"secret": "a", "version": 0}, False),
        ({"secret": "a", "version": True}, False),
        ({"secret": "a", "other": 1}, False),
        ({"secret": 3}, False),
        ("a", False),
    ],
)
def test_what_a_reference_is(value: object, is_one: bool) -> None:
    assert refs.is_reference(value) is is_one


@pytest.mark.parametrize(
    ("destination", "allowed", "ok"),
    [
        ("api.example.com", ("api.example.com",), True),
        ("API.example.com", ("api.example.com",), True),
        ("evil.com", ("api.example.com",), False),
        ("a.example.com", ("*.example.com",), True),
        ("example.com", ("*.example.com",), False),
        ("badexample.com", ("*.example.com",), False),
        ("db.example.com:5432", ("db.example.com:5432",), True),
        ("db.example.com:5433", ("db.example.com:5432",), False),
        ("db.example.com", ("db.example.com:5432",), False),
        ("[::1]:5432", ("::1",), True),
    ],
)
def test_allowed_hosts(destination: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert refs.host_allowed(destination, allowed) is ok


def test_the_masker_hides_every_value_longest_first_and_leaves_tiny_ones() -> None:
    mask = refs.Masker(["abcdef", "abcdefgh", "ab"])
    assert mask("x abcdefgh y abcdef z ab") == "x *** y *** z ab"
    assert not refs.Masker([])


TOKEN = "Bearer SECRETVALUE-PLAINTEXT-TOK"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # An error quoting the start of a response body: the value cut at the end.
        ("answered 401: invalid xxxx Bearer SECRETVALUE-PLAIN", "answered 401: invalid xxxx ***"),
        ("answered 401: xxxx SECRETVALUE-PLAINTEXT-", "answered 401: xxxx ***"),
        # ... or the end of a body: cut at the start.
        ("ALUE-PLAINTEXT-TOK was refused", "*** was refused"),
        # Whitespace made single spaces, JSON-escaped, URL-encoded, its long word alone.
        ("got Bearer   SECRETVALUE-PLAINTEXT-TOK", "got Bearer   ***"),
        ('{"auth": "Bearer SECRETVALUE-PLAINTEXT-TOK"}', '{"auth": "***"}'),
        ("GET /?t=Bearer%20SECRETVALUE-PLAINTEXT-TOK", "GET /?t=***"),
        ("token SECRETVALUE-PLAINTEXT-TOK expired", "token *** expired"),
        # What only looks like a piece is left: a short end, a word of the value alone.
        ("the Bear", "the Bear"),
        ("Bearer token refused", "Bearer token refused"),
        ("SECRE", "SECRE"),
    ],
)
def test_the_masker_hides_a_value_cut_reformatted_or_quoted_in_part(text: str, masked: str) -> None:
    assert refs.Masker([TOKEN])(text) == masked


def test_the_masker_hides_a_cut_piece_of_a_short_value_down_to_half_of_it() -> None:
    mask = refs.Masker(["hunter22", 'pa"ss'])
    assert mask("login failed for hunt") == "login failed for ***"
    assert mask("login failed for hu") == "login failed for hu"
    assert mask('quoted "pa\\"ss"') == 'quoted "***"'
    # A value whose whitespace an error made single spaces.
    assert refs.Masker(["user:\t pw-of-the-db"])("auth user: pw-of-the-db") == "auth ***"


# --- at save ------------------------------------------------------------------------------


def test_a_credential_in_clear_is_refused_naming_the_field(world: RunWorld) -> None:
    assert problems(world, credential(token="plain")) == [
        'steps[0].config.token: a credential must be a secret reference {"secret": "<name>"}'
        " (POST /api/v1/secrets creates one), not a plain value"
    ]
    webhook = step(
        "send",
        "Output.webhook",
        config={"url": "https://h.example", "headers": {"authorization": "Bearer x"}},
    )
    assert problems(world, webhook) == [
        "steps[0].config.headers.authorization: a credential must be a secret reference"
        ' {"secret": "<name>"} (POST /api/v1/secrets creates one), not a plain value'
    ]


def test_references_are_accepted_where_marked_and_checked_against_the_tenant(
    world: RunWorld,
) -> None:
    world.pipeline("ok", credential(token={"secret": "api-token"}, user={"secret": "api-token"}))
    header = {"url": "https://h.example", "headers": {"X-Trace": {"secret": "api-token"}}}
    world.pipeline("hdr", step("send", "Output.webhook", config=header))
    assert problems(world, credential(token={"secret": "nope"})) == [
        "steps[0].config.token: the tenant has no secret 'nope' (POST /api/v1/secrets)"
    ]
    assert problems(world, credential(token={"secret": "api-token", "version": 2})) == [
        "steps[0].config.token: secret 'api-token' has no version 2 (its newest is 1)"
    ]
    assert problems(world, credential(token={"secret": "api-token"}, host={"secret": "x"})) == [
        "steps[0].config.host: this field does not take a secret reference"
    ]
    assert problems(world, credential(token={"secret": "api-token", "version": 0})) == [
        'steps[0].config.token: a secret reference is {"secret": "<name>"} with an optional'
        ' "version" of 1 or more, and nothing else'
    ]


def test_a_secret_limited_to_hosts_and_namespaces_is_refused_elsewhere(world: RunWorld) -> None:
    world.secrets.put_version(
        world.admin,  # type: ignore[attr-defined]
        "api-token",
        CTX,
        value=NEWER,
        allowed_hosts=("*.example.com",),
        namespaces=("payments",),
    )
    assert problems(world, credential(token={"secret": "api-token"}, host="evil.test")) == [
        "steps[0].config.token: secret 'api-token' may be used only by pipelines in"
        " namespace(s) payments",
        "steps[0].config.token: secret 'api-token' may be sent only to *.example.com, not to"
        " evil.test",
    ]


def test_another_tenants_secret_is_not_found_by_its_name(world: RunWorld) -> None:
    other = RunWorld(world.files.parent.parent / "other")
    with pytest.raises(InvalidDefinition) as raised:
        other.pipeline("p", credential(token={"secret": "api-token"}))  # type: ignore[arg-type]
    assert "the tenant has no secret 'api-token'" in raised.value.errors[0].message


# --- where the step runs -------------------------------------------------------------------


async def test_a_step_gets_the_newest_value_and_says_nothing_of_it(world: RunWorld) -> None:
    pipeline = world.pipeline("p", credential(token={"secret": "api-token"}))
    first = await world.execute(world.trigger(pipeline))
    world.secrets.put_version(world.admin, "api-token", CTX, value=NEWER)  # type: ignore[attr-defined]
    second = await world.execute(world.trigger(pipeline))
    assert (first.status, second.status) == ("succeeded", "succeeded")
    lines = [line["message"] for line in world.logs.of(first.id) + world.logs.of(second.id)]
    assert "signing in as anonymous with ***" in lines
    assert not any(TOKEN in line or NEWER in line for line in lines)
    stored = b"".join(n.state for n in world.store.recorder.select_notifications(1, 10_000))
    assert TOKEN.encode() not in stored and NEWER.encode() not in stored


async def test_a_failing_step_is_retried_and_its_errors_are_masked(world: RunWorld) -> None:
    use = step(
        "use",
        "Test.credential",
        config={"token": {"secret": "api-token"}, "fail": True},
        retries=1,
        retry_delay=0.01,
    )
    pipeline = world.pipeline("p", use)
    run = await world.execute(world.trigger(pipeline))
    assert run.status == "failed"
    assert run.steps["use"].attempts == 2
    assert run.steps["use"].error == "api.example.com refused token ***"
    assert all(TOKEN not in line["message"] for line in world.logs.of(run.id))


async def test_a_secret_deleted_or_narrowed_after_save_fails_the_step_clearly(
    world: RunWorld,
) -> None:
    pipeline = world.pipeline("p", credential(token={"secret": "api-token"}))
    world.secrets.put_version(
        world.admin,  # type: ignore[attr-defined]
        "api-token",
        CTX,
        value=NEWER,
        allowed_hosts=("other.example.org",),
    )
    narrowed = await world.execute(world.trigger(pipeline))
    assert narrowed.steps["use"].error == (
        "config.token: secret 'api-token' may be sent only to other.example.org, not to"
        " api.example.com"
    )
    world.secrets.delete(world.admin, "api-token", CTX, force=True)  # type: ignore[attr-defined]
    gone = await world.execute(world.trigger(pipeline))
    assert gone.steps["use"].error == "config.token: the tenant has no secret 'api-token'"
    assert gone.steps["use"].attempts == 1  # not retryable


async def test_a_redacted_credential_fails_the_run_instead_of_signing_with_it(
    world: RunWorld,
) -> None:
    from application.errors import StepFailed
    from application.ports import StepCall

    call = StepCall(
        run_id="r",
        tenant_id=world.tenant_id,
        run_attempt=1,
        step=credential(token=refs.REDACTED),  # type: ignore[arg-type]
        step_attempt=1,
        params={},
    )
    with pytest.raises(StepFailed) as failed:
        await world.steps.run(call, asyncio.Event())
    assert "config.token of step 'use' was redacted" in str(failed.value)
    assert not failed.value.retryable


@pytest.mark.parametrize("padding", [0, 250, 280, 290])
async def test_an_http_error_quoting_a_token_near_its_cut_keeps_none_of_it(padding: int) -> None:
    """A plugin's error quotes the first ERROR_BODY_CHARS of a refusal's body, its
    whitespace made single spaces: the token the server echoed back, wherever the cut
    falls in it, is masked whole (the step runner masks every error it stores)."""
    token = "SECRETVALUE-PLAINTEXT-TOKEN-0123456789"
    echoed = f"invalid credentials {'x' * padding}  Bearer {token}"
    request = httpx.Request("POST", "https://api.example.com/hook")
    refused = httpx.Response(401, content=echoed.encode(), request=request)
    error = await network.status_error("POST", str(request.url), refused)
    said = refs.Masker([f"Bearer {token}"])(str(error))
    pieces = {token[i : i + refs.CUT_PIECE] for i in range(len(token) - refs.CUT_PIECE + 1)}
    assert not [piece for piece in pieces if piece in said], said
