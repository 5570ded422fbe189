"""Approvals: records bound to the parameters' digest, people-requested steps, who may decide (App
Service Authentication principals), the approvals timer (expiry, escalation) and the Teams cards,
posted through the Bot Connector API (and the group members read with msgraph-sdk) to the local
HTTPS server."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from aegis.approvals import identity
from aegis.approvals.bot import BotCards
from aegis.approvals.identity import Forbidden, NotSignedIn
from aegis.approvals.sweep import Sweeper
from aegis.approvals.teams import card
from aegis.events import AiResource, Severity, User
from aegis.records import Incident, TimelineEntry
from aegis.respond import playbooks
from aegis.respond.connect import Bot
from aegis.respond.record import DecisionRefused, Responder
from tests.helpers import corroborate_all
from tests.test_execute import connections
from tests.wire import Reply, WireServer

TEAM, CHANNEL = "0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c", "19:oncall0123@thread.tacv2"
ONCALL, MANAGER = "5b1f3c2a-7d4e-4a6b-9c8d-0e1f2a3b4c5d", "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
ACCOUNT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai"
PLAN = f"""
mode: dry_run
tiers: {{critical: P1, high: P1, medium: P2, low: P3, informational: P4}}
triggers: [{{playbooks: [contain]}}]
approvals: {{isolate_endpoint: 2, release_endpoint: 1, contain_ai_resource: 1, restore_ai_resource: 1,
             rotate_ai_keys: 2, revoke_sessions: 1, disable_user: 2, enable_user: 1, notify: 1}}
approval_expiry: 2h
escalation:
  - {{group: {ONCALL}, after: 15m, name: AI platform on-call}}
  - {{group: {MANAGER}, after: 45m, name: security duty manager}}
access: {{approver_roles: [Aegis.Approver], approver_groups: [], reader_roles: [Aegis.Reader]}}
on_call: {{team: {TEAM}, channel: "{CHANNEL}"}}
"""
CONTAIN = """id: contain
description: contain the account, and tell the channel what was seen
steps:
  - {name: cut key access, action: contain_ai_resource, params: {account: "{{ entities.ai_resource }}", mode: disable_local_auth}}
  - {name: tell, action: notify, params: {team: 0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c, channel: "19:oncall0123@thread.tacv2",
                                          text: "{{ incident.title }}"}}
"""
USERS = """id: users
description: sign the users out
steps:
  - {name: revoke, action: revoke_sessions, for_each: entities.user, params: {user: "{{ item.key }}"}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def plan(tmp_path: Path, text: str = PLAN) -> playbooks.Response:
    folder = tmp_path / "playbooks"
    folder.mkdir(exist_ok=True)
    (folder / playbooks.PLAN_FILE).write_text(text)
    (folder / "contain.yaml").write_text(CONTAIN)
    (folder / "users.yaml").write_text(USERS)
    return playbooks.load(folder)


def incident(title: str = "Jailbreak then key theft <script>alert(1)</script>") -> Incident:
    at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    timeline = (TimelineEntry(at, "e1", "AI.Azure_Jailbreak", "defender", "prompt attack", "Jailbreak <b>x</b>"),)
    return Incident(id="inc1", detection="ai-prompt-attack-then-exfiltration", bucket="b", group="g", title=title,
                    severity=Severity.HIGH, first_seen=at, last_seen=at,
                    entities=(AiResource(resource_id=ACCOUNT), User(upn="mallory@contoso.com")),
                    atlas=("AML.T0054",), owasp_llm=("LLM01",), event_ids=("e1",), event_count=1, timeline=timeline)  # fmt: skip


@pytest.fixture
def case(tmp_path, store):
    """The plan's steps for one incident, recorded on SQLite and on Table Storage (Azurite)."""
    return planned(tmp_path, store)


def planned(tmp_path, store):
    clock = Clock()
    resp = plan(tmp_path)
    responder = Responder(resp, store, clock=clock)
    responder.respond([incident()])
    corroborate_all(responder)
    return resp, store, clock, responder


def waiting(store, action):
    return next(s for s in store.steps(status=["awaiting_approval"]) if s.action == action)


# --- records ------------------------------------------------------------------------------------------


def test_a_record_carries_its_incident_step_parameters_digest_approvals_requester_and_expiry(case):
    _, store, clock, _ = case
    step = waiting(store, "contain_ai_resource")
    s = step.summary()
    assert (s["incident"], s["playbook"], s["step"]) == ("inc1", "contain", "cut key access")
    assert s["params"] == {"account": ACCOUNT.lower(), "mode": "disable_local_auth", "allow": []}
    assert s["digest"] == step.digest
    assert len(step.digest) == 64
    assert (s["approvals_needed"], s["requested_by"]) == (1, "aegis")
    assert step.expires == clock.now + timedelta(hours=2)


def test_an_approval_counts_only_for_the_digest_the_approver_saw(case):
    _, store, _, responder = case
    step = waiting(store, "contain_ai_resource")
    with pytest.raises(DecisionRefused, match="other parameters"):
        responder.decide(step.key, "alice@contoso.com", approve=True, digest="0" * 64)
    assert store.step(step.key).status == "awaiting_approval"
    assert responder.decide(step.key, "alice@contoso.com", approve=True, digest=step.digest).status == "dry_run"


def test_when_the_parameters_change_the_waiting_step_is_superseded_and_its_approvals_do_not_carry(case):
    _, store, _, responder = case
    old = waiting(store, "notify")
    grown = dataclasses.replace(incident(), title="Jailbreak, key theft and exfiltration")
    responder.respond([grown])  # the incident grew: the notice's text (a parameter) changed
    assert store.step(old.key).status == "superseded"
    assert "parameters changed" in (store.step(old.key).reason or "")
    new = waiting(store, "notify")
    assert new.key != old.key
    assert new.approvers == ()
    assert new.params["text"] == grown.title
    with pytest.raises(DecisionRefused, match="superseded"):
        responder.decide(old.key, "alice@contoso.com", approve=True)
    assert waiting(store, "contain_ai_resource")  # a step whose parameters did not change stays
    assert [a.event for a in store.audit_log() if a.step == old.key][-1] == "superseded"


def test_a_person_who_requests_a_playbook_cannot_approve_its_steps(case):
    _, _store, _, responder = case
    steps = responder.request(incident(), "users", "Bob@Contoso.com")
    [revoke] = steps
    assert (revoke.action, revoke.requested_by, revoke.status) == (
        "revoke_sessions",
        "bob@contoso.com",
        "awaiting_approval",
    )
    corroborate_all(responder)
    with pytest.raises(DecisionRefused, match=r"bob@contoso\.com requested this step"):
        responder.decide(revoke.key, "bob@contoso.com", approve=True)
    assert responder.decide(revoke.key, "carol@contoso.com", approve=True).status == "dry_run"
    assert (
        responder.request(incident(), "users", "bob@contoso.com")[0].status == "dry_run"
    )  # asked again: the same step
    with pytest.raises(Exception, match="no playbook 'nope'"):
        responder.request(incident(), "nope", "bob@contoso.com")


# --- who is asking ------------------------------------------------------------------------------------------


def principal(**kw) -> dict[str, str]:
    return {"x-ms-client-principal": identity.encode_easy_auth(**kw)}


AUTH_ON = {"WEBSITE_AUTH_ENABLED": "True"}  # what the platform sets when App Service Authentication is on


def test_the_app_service_principal_gives_the_sign_in_name_roles_and_groups():
    p = identity.from_easy_auth(
        principal(
            name="Alice@Contoso.com",
            oid="11111111-2222-3333-4444-555555555555",
            roles=("Aegis.Approver",),
            groups=(ONCALL.upper(),),
        ),
        environ=AUTH_ON,
    )
    assert (p.name, p.roles, p.groups) == ("alice@contoso.com", {"Aegis.Approver"}, {ONCALL})


@pytest.mark.parametrize(
    ("headers", "environ", "why"),
    [
        ({}, AUTH_ON, "not signed in"),
        ({"x-ms-client-principal": "not base64!"}, AUTH_ON, "not valid"),
        ({"x-ms-client-principal": base64.b64encode(b"[1, 2]").decode()}, AUTH_ON, "not valid"),
        (
            {"x-ms-client-principal": base64.b64encode(orjson.dumps({"auth_typ": "github", "claims": []})).decode()},
            AUTH_ON,
            "Entra ID",
        ),
        (
            {"x-ms-client-principal": base64.b64encode(orjson.dumps({"auth_typ": "aad", "claims": []})).decode()},
            AUTH_ON,
            "names no user",
        ),
        ({"x-ms-client-principal": "A" * 40_000}, AUTH_ON, "too large"),
        # with App Service Authentication off, or not known to be on, anyone could send the header: believe none
        (principal(name="a@b.c", oid="1"), {"WEBSITE_INSTANCE_ID": "x"}, "not known to be on"),
        (principal(name="a@b.c", oid="1"), {"WEBSITE_INSTANCE_ID": "x", "WEBSITE_AUTH_ENABLED": "False"}, "not true"),
        (principal(name="a@b.c", oid="1"), {}, "not known to be on"),  # `func start`, a container: no Azure variables
    ],
)
def test_no_believable_principal_is_not_signed_in(headers, environ, why):
    with pytest.raises(NotSignedIn, match=why):
        identity.from_easy_auth(headers, environ=environ)


def test_the_plan_decides_who_may_decide_and_who_may_read(tmp_path):
    p = plan(tmp_path).plan
    env = {"WEBSITE_INSTANCE_ID": "x", "WEBSITE_AUTH_ENABLED": "True"}

    def who(**kw):
        return identity.from_easy_auth(principal(name="x@contoso.com", oid="1", **kw), environ=env)

    assert identity.may_decide(who(roles=("Aegis.Approver",)), p)
    assert identity.may_decide(who(groups=(MANAGER,)), p)  # an escalation contact's member
    reader = who(roles=("Aegis.Reader",))
    assert identity.may_read(reader, p)
    assert not identity.may_decide(reader, p)
    with pytest.raises(Forbidden, match="may not decide"):
        identity.require(reader, p, decide=True)
    with pytest.raises(Forbidden, match="no role"):
        identity.require(who(roles=("Something.Else",)), p, decide=False)


# --- the approvals timer: expiry and escalation ------------------------------------------------------------


class FakeCards:
    """Cards kept in memory (the Graph wire is tested below with the real client)."""

    def __init__(self) -> None:
        self.posted: list[dict] = []
        self.updated: list[tuple[str, dict]] = []
        self.escalations: list[tuple[str, str, str]] = []

    def post_card(self, where, content):
        self.posted.append(content)
        return f"m{len(self.posted)}"

    def update_card(self, where, message, content):
        self.updated.append((message, content))

    def escalate(self, where, message, group, text):
        self.escalations.append((message, group, text))
        return 2


def test_the_timer_escalates_once_per_contact_then_expires_and_never_approves(case):
    resp, store, clock, _ = case
    cards = FakeCards()
    sweep = Sweeper(
        resp, store, incidents=lambda: [incident()], teams=cards, console_url="https://aegis.example", clock=clock
    )
    first = sweep.run()
    assert (first.cards_posted, first.escalated) == (2, 0)
    clock.now += timedelta(minutes=16)
    assert sweep.run().escalated == 2  # both waiting steps, to the first contact
    assert sweep.run().escalated == 0  # once per contact
    assert {g for _, g, _ in cards.escalations} == {ONCALL}
    assert all(
        "AI platform on-call, please decide: https://aegis.example/console/approvals/" in t
        for *_, t in cards.escalations
    )
    clock.now += timedelta(minutes=30)
    assert sweep.run().escalated == 2
    assert [g for _, g, _ in cards.escalations].count(MANAGER) == 2
    clock.now += timedelta(hours=2)
    done = sweep.run()
    assert (done.expired, done.cards_updated) == (2, 2)  # expired, and the cards say so
    assert {s.status for s in store.steps()} == {"expired"}
    assert all(c["body"][0]["text"] == "Step expired" and len(c["actions"]) == 1 for _, c in cards.updated)
    events = [a.event for a in store.audit_log()]
    assert events.count("escalated") == 4
    assert events.count("expired") == 2
    assert events.count("notified") == 2
    assert "approved" not in events


def test_a_decision_updates_the_card_and_a_card_is_posted_once(case):
    resp, store, clock, responder = case
    cards = FakeCards()
    sweep = Sweeper(resp, store, incidents=lambda: [incident()], teams=cards, clock=clock)
    sweep.run()
    sweep.run()
    assert len(cards.posted) == 2
    assert cards.updated == []
    step = waiting(store, "contain_ai_resource")
    responder.decide(step.key, "alice@contoso.com", approve=True)
    assert sweep.run().cards_updated == 1
    [(message, content)] = cards.updated
    assert message == step.card
    assert content["body"][0]["text"] == "Step dry run"
    assert sweep.run().cards_updated == 0


def test_without_teams_the_timer_still_expires_and_escalates_in_the_audit_log(case):
    resp, store, clock, _ = case
    sweep = Sweeper(resp, store, incidents=lambda: [], teams=None, clock=clock)
    clock.now += timedelta(minutes=20)
    assert sweep.run().escalated == 2
    assert [a.detail for a in store.audit_log() if a.event == "escalated"] == ["to AI platform on-call"] * 2


# --- Teams through the bot (the Bot Connector API against the local HTTPS server) ---------------------------

BOT, TENANT = "11111111-2222-4333-8444-555555555555", "0f7c2d1a-5b3e-4c8d-9e6f-1a2b3c4d5e6f"
CONVERSATIONS = "/teams/v3/conversations"


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def teams(server: WireServer) -> BotCards:
    bot = Bot(BOT, TENANT, f"{server.url}/teams/")
    return BotCards(dataclasses.replace(connections(server), retries=0, bot=bot))


def conversation(activity: str) -> dict:
    """The documented answer of POST /v3/conversations (ConversationResourceResponse)."""
    return {
        "id": f"{CHANNEL};messageid={activity}",
        "activityId": activity,
        "serviceUrl": "https://smba.example/teams/",
    }


def test_the_card_is_posted_and_updated_through_the_bot_with_plain_text_fields(case, server):
    resp, store, clock, responder = case
    server.expect("POST", CONVERSATIONS, Reply(201, conversation("1616990032035")),
                  Reply(201, conversation("1616990032036")))  # fmt: skip
    cards = teams(server)
    sweep = Sweeper(resp, store, incidents=lambda: [incident()], teams=cards, console_url="https://aegis.example",
                    clock=clock)  # fmt: skip
    assert sweep.run().cards_posted == 2
    first = server.seen[0]
    assert first.headers["authorization"] == "Bearer test-token"
    assert ("https://api.botframework.com/.default",) in cards.conn.credential.scopes  # the Bot Framework's audience
    assert first.body["isGroup"] is True
    assert first.body["bot"] == {"id": f"28:{BOT}"}
    assert first.body["channelData"] == {"channel": {"id": CHANNEL}, "tenant": {"id": TENANT}}
    [attachment] = first.body["activity"]["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = attachment["content"]
    thread = f"{CHANNEL};messageid=1616990032035"
    step = store.step(next(s.key for s in store.steps() if s.card == f"{thread}|1616990032035"))
    runs = [i["text"] for block in content["body"] if block["type"] == "RichTextBlock" for i in block["inlines"]]
    assert incident().title in " ".join(runs)  # as a TextRun: plain text, no markdown, no HTML
    assert step.digest[:16] in runs
    actions = {a["title"]: a for a in content["actions"]}
    approve = actions["Approve"]
    assert (approve["type"], approve["verb"], approve["data"]) == (
        "Action.Execute",
        "approve",
        {"step": step.key, "digest": step.digest},
    )  # bound to what the card shows
    deny = actions["Deny…"]["card"]
    assert deny["body"][0] == {"type": "Input.Text", "id": "reason", "label": "Why deny?", "isRequired": True,
                               "maxLength": 500, "errorMessage": "A denial needs a reason."}  # fmt: skip
    assert deny["actions"][0]["verb"] == "deny"
    assert actions["Open in the console"]["url"] == f"https://aegis.example/console/approvals/{step.key}"

    responder.decide(step.key, "alice@contoso.com", approve=True)
    server.expect("PUT", f"{CONVERSATIONS}/{thread}/activities/1616990032035", Reply(200, {"id": "1616990032035"}))
    assert sweep.run().cards_updated == 1
    put = server.seen[-1]
    assert put.body["id"] == "1616990032035"
    updated = put.body["attachments"][0]["content"]
    assert updated["body"][0]["text"] == "Step dry run"
    assert [a["title"] for a in updated["actions"]] == ["Open in the console"]


def test_escalation_replies_in_the_cards_thread_mentioning_the_groups_members(case, server):
    resp, store, clock, _ = case
    for mid in ("m1", "m2"):
        server.expect("POST", CONVERSATIONS, Reply(201, conversation(mid)))
    sweep = Sweeper(resp, store, incidents=lambda: [incident()], teams=teams(server), clock=clock)
    sweep.run()
    members = {"value": [{"@odata.type": "#microsoft.graph.user", "id": "aaaa-1", "displayName": "Ada <Ops>"},
                         {"@odata.type": "#microsoft.graph.user", "id": "bbbb-2", "displayName": "Bo"}]}  # fmt: skip
    for mid in ("m1", "m2"):
        server.expect(
            "GET", f"/v1.0/groups/{ONCALL}/members/graph.user", Reply(200, members)
        )  # the SDK casts with the short alias
        server.expect("POST", f"{CONVERSATIONS}/{CHANNEL};messageid={mid}/activities", Reply(201, {"id": mid + "r"}))
    clock.now += timedelta(minutes=15, seconds=1)
    assert sweep.run().escalated == 2
    lookup = next(s for s in server.seen if s.method == "GET")
    assert lookup.query["$select"] == ["id,displayName"]
    assert lookup.query["$top"] == ["20"]
    reply = next(s for s in server.seen if s.path.endswith("/activities") and s.method == "POST")
    assert reply.body["textFormat"] == "xml"
    assert reply.body["text"].endswith("<at>Ada &lt;Ops&gt;</at> <at>Bo</at>")
    assert reply.body["entities"][0] == {"type": "mention", "text": "<at>Ada &lt;Ops&gt;</at>",
                                         "mentioned": {"id": "aaaa-1", "name": "Ada <Ops>"}}  # fmt: skip


def test_a_failing_bot_call_is_retried_next_run_and_blocks_nothing(case, server):
    resp, store, clock, _ = case
    server.expect("POST", CONVERSATIONS, Reply(403, {"error": {"code": "BotNotInConversationRoster",
                                                                "message": "the bot is not in the team"}}),
                  Reply(201, conversation("m2")))  # fmt: skip
    sweep = Sweeper(resp, store, incidents=lambda: [incident()], teams=teams(server), clock=clock)
    counts = sweep.run()
    assert (counts.cards_posted, counts.errors) == (1, 1)
    server.expect("POST", CONVERSATIONS, Reply(201, conversation("m3")))
    assert sweep.run().cards_posted == 1
    assert sorted(s.card.rpartition("|")[2] for s in store.steps() if s.card) == ["m2", "m3"]


def test_a_card_posted_through_graph_before_the_bot_is_posted_again(case, server):
    resp, store, clock, _ = case
    for step in store.steps(status=["awaiting_approval"]):
        store.replace_step(step.next(card="1616990032035", card_shows="dry_run"), audit=[])  # a Graph message id
    server.expect("POST", CONVERSATIONS, Reply(201, conversation("n1")), Reply(201, conversation("n2")))
    counts = Sweeper(resp, store, incidents=lambda: [incident()], teams=teams(server), clock=clock).run()
    assert (counts.cards_posted, counts.cards_updated, counts.errors) == (2, 0, 0)
    assert not [s for s in server.seen if s.method == "PUT"]


def test_the_card_text_is_never_markup():
    step_like = incident(title="[click](https://evil.example) **now**")
    from aegis.records import StepRecord

    s = StepRecord(key="k", incident="inc1", playbook="p", step="s", action="notify", target="t",
                   params={"team": TEAM, "channel": CHANNEL, "text": "x"}, approvals=1, status="awaiting_approval",
                   reason=None, aliases=(), corroboration="", requested_by="aegis", created=datetime(2026, 1, 1, tzinfo=UTC),
                   expires=None)  # fmt: skip
    content = card(s, step_like, "https://aegis.example")
    kinds = {b["type"] for b in content["body"][1:]}
    assert kinds == {"RichTextBlock"}  # no TextBlock (markdown) carries an incident field


def test_two_approvers_at_the_same_moment_cannot_both_be_the_second(case):
    """Both read the step with one approval of two; the store takes one write over that revision."""
    import threading

    resp, store, clock, _ = case
    step = next(s for s in store.steps(status=["awaiting_approval"]) if s.action == "contain_ai_resource")
    two = dataclasses.replace(step, approvals=2, approvers=("alice@contoso.com",))
    assert store.replace_step(two.next(), audit=[])
    barrier = threading.Barrier(2)

    class Racing:
        """The store as each approver sees it: both read before either writes."""

        def __getattr__(self, name):
            return getattr(store, name)

        def step(self, key):
            found = store.step(key)
            barrier.wait(5)
            return found

    results: dict[str, object] = {}

    def approve(person: str) -> None:
        try:
            results[person] = Responder(resp, Racing(), clock=clock).decide(step.key, person, approve=True).status
        except DecisionRefused as exc:
            results[person] = str(exc)

    threads = [threading.Thread(target=approve, args=(p,)) for p in ("bob@contoso.com", "carol@contoso.com")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert list(results.values()).count("dry_run") == 1  # one is the second approval
    assert sum("decided by someone else at the same moment" in str(r) for r in results.values()) == 1
    final = store.step(step.key)
    assert len(final.approvers) == 2
    assert [a.event for a in store.audit_log() if a.step == step.key].count("approved") == 1
