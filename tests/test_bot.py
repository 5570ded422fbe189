"""The bot's `/api/messages`: the Bot Framework token checked as its contract says (a throwaway
signing key, published through OpenID metadata over the local HTTPS server), then the card's
Universal Action decided through the same approvals code as the console."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import zipfile
from io import BytesIO
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from aegis.approvals import teamsapp, web
from aegis.approvals.bot import Decisions, json_getter
from aegis.approvals.botauth import ISSUER, BotAuth, Unauthorized
from aegis.approvals.identity import Principal
from tests.test_approvals import BOT, CHANNEL, ONCALL, incident, planned
from tests.test_execute import connections
from tests.wire import Reply, WireServer

SERVICE = "https://smba.trafficmanager.net/teams/"
METADATA = "/v1/.well-known/openidconfiguration"
KEYS = "/v1/keys"
ALICE = "a11ce000-0000-4000-8000-000000000001"


def keypair() -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return private, public


SIGNER, SIGNER_JWK = keypair()
FORGER, _ = keypair()


def token(*, key: Any = SIGNER, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": BOT, "exp": now + 600, "nbf": now - 10, "serviceurl": SERVICE, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})


def published(server: WireServer, *, endorsements: list[str] | None = None, times: int = 1) -> None:
    for _ in range(times):
        server.expect("GET", METADATA, Reply(200, {"issuer": ISSUER, "jwks_uri": f"{server.url}{KEYS}",
                                                   "id_token_signing_alg_values_supported": ["RS256"]}))  # fmt: skip
        keys = {"keys": [{**SIGNER_JWK, "kid": "k1", "use": "sig",
                          "endorsements": ["msteams"] if endorsements is None else endorsements}]}  # fmt: skip
        server.expect("GET", KEYS, Reply(200, keys))


def activity(**overrides: Any) -> dict[str, Any]:
    return {"type": "invoke", "name": "adaptiveCard/action", "channelId": "msteams", "serviceUrl": SERVICE,
            "from": {"id": "29:1abc", "aadObjectId": ALICE, "name": "Alice"}, **overrides}  # fmt: skip


@pytest.fixture
def case(tmp_path, store):
    """The plan's steps for one incident awaiting approval, on SQLite and on Table Storage (Azurite)."""
    return planned(tmp_path, store)


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def auth(server: WireServer) -> BotAuth:
    conn = dataclasses.replace(connections(server), retries=0)
    return BotAuth(BOT, json_getter(conn), f"{server.url}{METADATA}")


def test_a_token_the_bot_framework_signed_for_this_bot_is_accepted_and_its_keys_are_fetched_once(server):
    published(server)
    a = auth(server)
    assert a.verify(f"Bearer {token()}", activity())["aud"] == BOT
    assert a.verify(f"Bearer {token()}", activity())["iss"] == ISSUER
    assert [s.path for s in server.seen] == [METADATA, KEYS]  # cached: no fetch for the second
    assert "authorization" not in server.seen[0].headers  # nothing of ours is sent to fetch public keys


@pytest.mark.parametrize(
    ("why", "header", "message"),
    [
        ("no token", None, "no bearer token"),
        ("not a JWT", "Bearer abc.def", "not a JWT"),
        ("signed by someone else with the published key id", f"Bearer {token(key=FORGER)}", "not valid"),
        ("expired", f"Bearer {token(exp=int(time.time()) - 3600)}", "not valid"),
        ("for another bot", f"Bearer {token(aud='99999999-2222-4333-8444-555555555555')}", "not valid"),
        ("from another issuer", f"Bearer {token(iss='https://sts.windows.net/evil/')}", "not valid"),
        ("without expiry", f"Bearer {token(exp=None)}", "not valid"),
        ("for another service URL", f"Bearer {token(serviceurl='https://evil.example/')}", "serviceUrl"),
        ("unsigned", "Bearer " + jwt.encode({"iss": ISSUER, "aud": BOT}, key="", algorithm="none"), "not RS256"),
        (
            "HMAC with the public key",
            "Bearer " + jwt.encode({"iss": ISSUER, "aud": BOT}, "s" * 32, algorithm="HS256"),
            "not RS256",
        ),
    ],
)
def test_a_forged_expired_or_misaddressed_token_is_refused(server, why, header, message):
    published(server)
    with pytest.raises(Unauthorized, match=message):
        auth(server).verify(header, activity())


def test_a_key_not_endorsed_for_teams_or_unknown_is_refused_and_unknown_ids_cannot_flood_the_key_endpoint(server):
    published(server, endorsements=["webchat"])
    a = auth(server)
    with pytest.raises(Unauthorized, match="not endorsed for the channel 'msteams'"):
        a.verify(f"Bearer {token()}", activity())
    for n in range(5):
        with pytest.raises(Unauthorized, match="not one its issuer publishes"):
            a.verify(f"Bearer {token(kid=f'made-up-{n}')}", activity())
    assert [s.path for s in server.seen] == [METADATA, KEYS]  # one fetch, however many unknown ids


class Groups:
    def __init__(self, *member_of: str) -> None:
        self.member_of, self.asked = set(member_of), []

    def __call__(self, person: str, groups: list[str]) -> set[str]:
        self.asked.append((person, sorted(groups)))
        return self.member_of & set(groups)


def decisions(case: Any, groups: Groups) -> Decisions:
    resp, _, _, responder = case
    return Decisions(responder, resp.plan, groups, incident=lambda _: incident(), console_url="https://aegis.example")


def invoke(step: Any, verb: str, **data: Any) -> dict[str, Any]:
    bound = {"step": step.key, "digest": step.digest, **data}
    return activity(value={"action": {"type": "Action.Execute", "verb": verb, "data": bound}})


def waiting(case: Any) -> Any:
    return next(s for s in case[1].steps(status=["awaiting_approval"]) if s.action == "contain_ai_resource")


def test_an_on_call_member_approves_on_the_card_and_gets_the_refreshed_card(case):
    groups = Groups(ONCALL)
    step = waiting(case)
    answer = decisions(case, groups).answer(invoke(step, "approve"))
    assert answer is not None
    assert (answer["statusCode"], answer["type"]) == (200, "application/vnd.microsoft.card.adaptive")
    assert answer["value"]["body"][0]["text"] == "Step dry run"  # one approval was enough, in dry-run mode
    decided = case[1].step(step.key)
    assert decided.approver_ids == (ALICE,)  # the person by their Entra object id
    assert groups.asked == [(ALICE, sorted([ONCALL, "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"]))]
    audit = [a for a in case[1].audit_log() if a.step == step.key and a.event == "approved"]
    assert audit
    assert audit[-1].actor_id == ALICE


def test_someone_in_no_approver_group_cannot_decide_from_teams(case):
    step = waiting(case)
    answer = decisions(case, Groups()).answer(invoke(step, "approve"))
    assert answer is not None
    assert answer["statusCode"] == 403
    assert case[1].step(step.key).status == "awaiting_approval"


def test_a_card_showing_other_parameters_decides_nothing_and_a_denial_needs_its_reason(case):
    step = waiting(case)
    d = decisions(case, Groups(ONCALL))
    stale = activity(value={"action": {"type": "Action.Execute", "verb": "approve",
                                       "data": {"step": step.key, "digest": "0" * 64}}})  # fmt: skip
    answer = d.answer(stale)
    assert answer is not None
    assert "other parameters" in answer["value"]
    answer = d.answer(invoke(step, "deny"))
    assert answer is not None
    assert "needs a reason" in answer["value"]
    assert case[1].step(step.key).status == "awaiting_approval"
    answer = d.answer(invoke(step, "deny", reason="the account serves the checkout copilot"))
    assert answer is not None
    assert case[1].step(step.key).status == "denied"
    assert answer["value"]["body"][0]["text"] == "Step denied"


def test_activities_that_are_not_card_actions_get_no_answer_and_bad_ones_are_refused(case):
    d = decisions(case, Groups(ONCALL))
    assert d.answer({"type": "message", "text": "hello"}) is None
    assert d.answer(activity(value={"action": {"verb": "delete-everything"}}))["statusCode"] == 400
    nobody = activity(value={"action": {"verb": "approve", "data": {"step": "x", "digest": "y"}}}, **{"from": {}})
    assert d.answer(nobody)["statusCode"] == 401


def test_the_endpoint_answers_only_what_a_valid_token_carries(case, server):
    published(server, times=2)
    step = waiting(case)
    endpoint = web.BotEndpoint(auth(server), decisions(case, Groups(ONCALL)))
    resp, store = case[0], case[1]

    def nobody(request: Any) -> Principal:
        raise AssertionError("the bot endpoint must not ask App Service Authentication")

    app = web.create_app(web.Console.over(store, resp, nobody), bot=endpoint)

    def post(content: bytes, bearer: str | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://func-aegis.example") as client:
                headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
                return await client.post("/api/messages", content=content, headers=headers)

        return asyncio.run(go())

    body = json.dumps(invoke(step, "approve")).encode()
    refused = post(body)
    assert refused.status_code == 401
    assert refused.json() == {"error": "unauthorized"}  # the reason is logged, not told
    assert post(body, token(key=FORGER)).status_code == 401
    assert store.step(step.key).status == "awaiting_approval"
    assert post(b"{", token()).status_code == 400
    ok = post(body, token())
    assert ok.status_code == 200
    assert ok.json()["type"] == "application/vnd.microsoft.card.adaptive"
    assert store.step(step.key).status == "dry_run"


def test_the_teams_app_package_names_the_bot_and_the_consoles_host_only():
    data = teamsapp.package(BOT, "https://func-aegis-abc.azurewebsites.net")
    with zipfile.ZipFile(BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(z.read("manifest.json"))
        color, outline = z.read("color.png"), z.read("outline.png")
    assert manifest["manifestVersion"] == "1.17"
    assert manifest["bots"] == [{"botId": BOT, "scopes": ["team"], "supportsFiles": False,
                                 "isNotificationOnly": False}]  # fmt: skip
    assert manifest["validDomains"] == ["func-aegis-abc.azurewebsites.net"]
    assert manifest["id"] == teamsapp.manifest(BOT, "https://other.example")["id"]  # stable per bot
    for png, size in ((color, 192), (outline, 32)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == size
        assert int.from_bytes(png[20:24], "big") == size
    assert CHANNEL not in json.dumps(manifest)  # nothing about the tenant's channels


def adaptive_card_problems(content: dict[str, Any]) -> list[str]:
    """What the Adaptive Cards library (npm `adaptivecards`) finds wrong in a card: it parses and
    validates the card as Teams' renderer does."""
    import os
    import shutil
    import subprocess

    from tests.conftest import ROOT

    if shutil.which("node") is None or not (ROOT / "node_modules" / "adaptivecards").is_dir():
        reason = "node and the npm package adaptivecards are needed (make test installs them)"
        if os.environ.get("AEGIS_REQUIRE_AZURITE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(["node", str(ROOT / "scripts" / "validate-card.js")], input=json.dumps(content).encode(),
                          capture_output=True, cwd=ROOT, timeout=60, check=True)  # fmt: skip
    return [json.loads(line)["message"] for line in done.stdout.decode().splitlines() if line.strip()]


def test_every_state_of_the_card_passes_the_adaptive_cards_library(case):
    from aegis.approvals.teams import card

    step = waiting(case)
    assert adaptive_card_problems(card(step, incident(), "https://aegis.example")) == []
    decided = case[3].decide(step.key, "alice@contoso.com", approve=True)
    assert adaptive_card_problems(card(decided, incident(), "https://aegis.example")) == []
    assert adaptive_card_problems(
        {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "Bogus"}]}
    )  # it can fail


# --- the console's callers by their Entra ID token (AEGIS_CONSOLE_AUTH=bearer) ---

TENANT = "0f7c2d1a-5b3e-4c8d-9e6f-1a2b3c4d5e6f"
CONSOLE_APP = "c0c0c0c0-1111-4222-8333-444444444444"


def entra_token(*, key: Any = SIGNER, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "aud": f"api://{CONSOLE_APP}", "tid": TENANT,
            "oid": ALICE, "preferred_username": "Alice@Contoso.com", "roles": ["Aegis.Approver"],
            "exp": now + 600, "nbf": now - 10, **claims}  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": "k1"})


def entra(server: WireServer) -> Any:
    from aegis.approvals.botauth import EntraBearer

    meta = f"/{TENANT}/v2.0/.well-known/openid-configuration"
    server.expect("GET", meta, Reply(200, {"issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
                                           "jwks_uri": f"{server.url}/{TENANT}/discovery/v2.0/keys"}))  # fmt: skip
    server.expect("GET", f"/{TENANT}/discovery/v2.0/keys", Reply(200, {"keys": [{**SIGNER_JWK, "kid": "k1"}]}))
    conn = dataclasses.replace(connections(server), retries=0)
    return EntraBearer(TENANT, CONSOLE_APP, json_getter(conn), authority=server.url)


def test_a_console_caller_is_who_their_entra_token_says_and_a_forged_easy_auth_header_is_nobody(server):
    from aegis.approvals import identity
    from aegis.approvals.identity import NotSignedIn

    verify = entra(server).verify
    who = identity.from_bearer({"authorization": f"Bearer {entra_token()}"}, verify)
    assert (who.name, who.id, who.roles) == ("alice@contoso.com", ALICE, frozenset({"Aegis.Approver"}))
    forged = identity.encode_easy_auth("mallory@contoso.com", "99999999-0000-4000-8000-000000000000",
                                       roles=("Aegis.Approver",))  # fmt: skip
    for headers in (
        {"x-ms-client-principal": forged},  # what a platform that does not block callers would let through
        {"authorization": f"Bearer {entra_token(key=FORGER)}", "x-ms-client-principal": forged},
        {"authorization": f"Bearer {entra_token(aud='api://another-app')}"},
        {"authorization": f"Bearer {entra_token(tid='11111111-1111-1111-1111-111111111111')}"},
        {"authorization": f"Bearer {entra_token(exp=int(time.time()) - 3600)}"},
    ):
        with pytest.raises(NotSignedIn):
            identity.from_bearer(headers, verify)
