"""Triage: acknowledge, assign, close with a classification, reopen and comment, each audited with
the person's name and object id, written only over the revision the person saw, on both stores,
and through the console as the Functions host serves it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from aegis.approvals.triage import Triager, TriageRefused
from aegis.events import AiResource, Severity
from aegis.records import AuditEntry, Incident, Triage
from tests.test_approvals_http import HOST, READER, app, console  # noqa: F401  (the fixture)

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
ANALYST = {"name": "ana@contoso.com", "oid": "a7a7", "roles": ("Aegis.Analyst",)}


def incident(ident: str = "inc1") -> Incident:
    return Incident(id=ident, detection="ai-key-brute-force", bucket="b", group="g", title="Key guessing",
                    severity=Severity.HIGH, first_seen=NOW, last_seen=NOW,
                    entities=(AiResource(resource_id="/subscriptions/s/resourcegroups/r/providers/microsoft."
                                                     "cognitiveservices/accounts/a"),),
                    atlas=(), owasp_llm=(), event_ids=(), event_count=3, timeline=())  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_a_triage_is_written_only_over_the_revision_it_was_read_at(store):
    first = Triage("inc1").next(NOW, status="active")
    assert store.save_triage(first, audit=[AuditEntry(NOW, "ana@contoso.com", "acknowledged", "", "triage", "inc1",
                                                      "", actor_id="a7a7")])  # fmt: skip
    assert not store.save_triage(Triage("inc1").next(NOW, owner="mallory"), audit=[])  # another revision 1
    second = first.next(NOW, owner="bob@contoso.com")
    assert store.save_triage(second, audit=[])
    assert not store.save_triage(first.next(NOW, owner="eve@contoso.com"), audit=[])  # read before `second`
    assert store.triage("inc1") == second
    assert store.triages() == {"inc1": second}
    assert store.triage("nope") is None
    audit = [a for a in store.audit_log() if a.action == "triage"]
    assert [(a.actor, a.actor_id, a.event) for a in audit] == [("ana@contoso.com", "a7a7", "acknowledged")]


def test_acknowledge_assign_comment_close_and_reopen_each_leave_an_audit_entry(store):
    triager, inc = Triager(store, clock=Clock()), incident()
    t = triager.apply(inc, "acknowledge", "ana@contoso.com", "a7a7", seen=0)
    assert (t.status, t.owner, t.owner_id) == ("active", "ana@contoso.com", "a7a7")
    t = triager.apply(inc, "assign", "ana@contoso.com", "a7a7", seen=1, owner=" Bob@Contoso.com ")
    assert (t.owner, t.owner_id) == ("bob@contoso.com", None)  # another person's id is not guessed
    t = triager.apply(inc, "comment", "bob@contoso.com", "b0b", text="line one\nline two\x1b[31m\u202e")
    assert t.comments[-1].text == "line one\nline two[31m"  # control characters go, the line break stays
    assert t.comments[-1].author_id == "b0b"
    t = triager.apply(inc, "close", "bob@contoso.com", "b0b", classification="benign_positive",
                      text="the red team's exercise")  # fmt: skip
    assert (t.status, t.classification, t.reason) == ("closed", "benign_positive", "the red team's exercise")
    t = triager.apply(inc, "reopen", "ana@contoso.com", "a7a7")
    assert (t.status, t.classification, t.revision) == ("active", None, 5)
    audit = [(a.actor, a.actor_id, a.event, a.target) for a in store.audit_log() if a.action == "triage"]
    assert audit == [
        ("ana@contoso.com", "a7a7", "acknowledged", "inc1"), ("ana@contoso.com", "a7a7", "assigned", "inc1"),
        ("bob@contoso.com", "b0b", "commented", "inc1"), ("bob@contoso.com", "b0b", "closed", "inc1"),
        ("ana@contoso.com", "a7a7", "reopened", "inc1"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("verb", "fields", "says"),
    [
        ("close", {}, "closing needs a classification"),
        ("close", {"classification": "false_positive"}, "say why it is a false positive"),
        ("close", {"classification": "mostly_fine"}, "closing needs a classification"),
        ("comment", {"text": " \x00 "}, "the comment is empty"),
        ("assign", {"owner": "<img src=x>"}, "assign to a user principal name"),
        ("reopen", {}, "the incident is not closed"),
        ("escalate", {}, "unknown triage action 'escalate'"),
    ],
)
def test_a_change_that_cannot_be_made_says_why_and_writes_nothing(sqlite_store, verb, fields, says):
    with pytest.raises(TriageRefused, match=re.escape(says)):
        Triager(sqlite_store).apply(incident(), verb, "ana@contoso.com", "a7a7", **fields)
    assert sqlite_store.triage("inc1") is None
    assert not [a for a in sqlite_store.audit_log() if a.action == "triage"]


def test_acting_on_a_stale_page_is_refused_with_who_changed_it(sqlite_store):
    triager, inc = Triager(sqlite_store), incident()
    triager.apply(inc, "acknowledge", "ana@contoso.com", "a7a7", seen=0)
    with pytest.raises(TriageRefused, match=r"changed since you read it \(revision 0, now 1, by ana@contoso.com\)"):
        triager.apply(inc, "close", "bob@contoso.com", "b0b", seen=0, classification="true_positive")
    assert sqlite_store.triage("inc1").status == "active"


def _form(functions_app, who: dict, incident_id: str) -> tuple[str, dict[str, str]]:
    page = console(functions_app, "GET", f"/console/incidents/{incident_id}", who=who)
    assert page.status_code == 200
    cookie = re.search(r"aegis_csrf=([^;]+)", page.headers["set-cookie"]).group(1)
    post = {"content-type": "application/x-www-form-urlencoded", "cookie": f"aegis_csrf={cookie}", "origin": HOST}
    return cookie, post


def test_the_console_lets_an_analyst_triage_and_a_reader_only_look(app):  # noqa: F811
    from aegis import runtime

    store = runtime.pipeline().store
    inc = store.incidents()[0]
    cookie, post = _form(app, ANALYST, inc.id)
    html = console(app, "GET", f"/console/incidents/{inc.id}", who=ANALYST).get_body().decode()
    assert 'name="verb" value="acknowledge"' in html
    assert "Approve" not in html  # an analyst decides no step
    ok = console(app, "POST", f"/console/incidents/{inc.id}/triage", who=ANALYST, headers=post,
                 body=f"verb=acknowledge&revision=0&csrf={cookie}".encode())  # fmt: skip
    assert ok.status_code == 303
    assert store.triage(inc.id).owner == "ana@contoso.com"
    stale = console(app, "POST", f"/console/incidents/{inc.id}/triage", who=ANALYST, headers=post,
                    body=f"verb=close&classification=true_positive&revision=0&csrf={cookie}".encode())  # fmt: skip
    assert stale.status_code == 409
    assert "changed since you read it" in stale.get_body().decode()
    no_token = console(app, "POST", f"/console/incidents/{inc.id}/triage", who=ANALYST, headers=post,
                       body=b"verb=close&classification=true_positive&revision=1")  # fmt: skip
    assert no_token.status_code == 403
    reader_page = console(app, "GET", f"/console/incidents/{inc.id}", who=READER).get_body().decode()
    assert 'name="verb"' not in reader_page
    rcookie, rpost = _form(app, READER, inc.id)
    refused = console(app, "POST", f"/console/incidents/{inc.id}/triage", who=READER, headers=rpost,
                      body=f"verb=close&classification=true_positive&revision=1&csrf={rcookie}".encode())  # fmt: skip
    assert refused.status_code == 403
    assert store.triage(inc.id).status == "active"
    mine = console(app, "GET", "/console?owner=me", who=ANALYST).get_body().decode()
    assert re.findall(r'<tr data-id="([0-9a-f]+)"', mine) == [inc.id]


def test_the_cli_triages_as_the_console_does_and_a_closed_incident_leaves_the_top_of_the_queue(tmp_path):
    from tests.conftest import ROOT
    from tests.test_cli import aegis

    db = str(tmp_path / "cli.db")
    assert aegis("replay", str(ROOT / "samples"), "--db", db).returncode == 0
    first = aegis("incidents", "--db", db).stdout.splitlines()[0]
    top = first.rsplit("[", 1)[1].rstrip("]")
    refused = aegis("incidents", "triage", top, "close", "--as", "Ana@Contoso.com", "--db", db)
    assert refused.returncode == 1
    assert "closing needs a classification" in refused.stderr
    done = aegis("incidents", "triage", top, "close", "--classification", "benign_positive", "--text", "red team",
                 "--as", "Ana@Contoso.com", "--db", db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{top}: closed, benign_positive (revision 1)"
    rows = aegis("incidents", "--db", db).stdout.splitlines()
    assert top not in rows[0]  # worked: it goes below the open ones
    assert "closed" in next(r for r in rows if top in r)
    audit = json.loads(aegis("audit", "--db", db, "--json").stdout)
    assert [(a["actor"], a["event"], a["target"]) for a in audit if a["action"] == "triage"] == [
        ("ana@contoso.com", "closed", top)
    ]
