"""The console in a real browser: Debian's Chromium, headless, driven by Playwright.

1. An on-call engineer signed in by App Service Authentication (the principal header the platform
   adds, set on the browser context) opens the console, finds the step a replayed scenario left
   waiting, approves it, and sees it run (dry run) with its audit entries.
2. Under `aegis serve` (the real command, as a user starts it), a person requests a playbook, is
   refused when approving its step (self-approval), and an alert field carrying `<script>` is
   shown as text and never runs.
3. On Flex Consumption (no App Service Authentication), a browser signs in through the app's own
   authorization code flow against a local Entra ID on another site, and its session cookie holds.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aegis import settings
from aegis.approvals import identity, web
from aegis.pipeline import Message
from aegis.records import SEVERITY_ORDER, views
from aegis.respond import playbooks
from aegis.respond.record import Responder
from aegis.store import SqliteStore
from tests.conftest import ROOT, SAMPLES

XSS = '<script>document.title="pwned";window.__xss=1</script><img src=x onerror="window.__xss=2">'


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Debian's chromium is not installed (`make test` installs it: scripts/ensure-chromium.sh)"
        if os.environ.get("AEGIS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " and AEGIS_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=executable, headless=True,
            # nothing but loopback (localhost too: the sign-in's Entra ID stands there, another site)
            args=["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost", "--no-sandbox"],
        )  # fmt: skip
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen | None = None) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}") from None
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def replayed(db: Path, *extra: bytes) -> SqliteStore:
    """The bundled scenario (and `extra` bodies) replayed into `db`, with the plan's steps recorded."""
    from aegis import runtime

    store = SqliteStore(db)
    pipeline = runtime.build_pipeline(settings.load(db=db), store)
    pipeline.process([Message(p.read_bytes(), hub="demo") for p in sorted(SAMPLES.rglob("*.json"))])
    pipeline.process([Message(b, hub="demo") for b in extra])
    Responder(playbooks.load(), store).respond(store.incidents())
    return store


def hostile_alert() -> bytes:
    """Our jailbreak sample with attacker-chosen text in the fields an analyst reads."""
    alert = copy.deepcopy(json.loads((SAMPLES / "defender" / "01-jailbreak-arm.json").read_text()))
    p = alert["properties"]
    p["systemAlertId"] = p["systemAlertId"].replace("0001", "0666")
    alert["id"] = alert["id"].replace("0001", "0666")
    alert["name"] = alert["name"].replace("0001", "0666")
    p["alertDisplayName"] = XSS
    return json.dumps(alert).encode()


def signed_in_as(browser, name: str, oid: str, role: str, **options):
    """A browser context whose requests carry App Service Authentication's principal for this person."""
    header = identity.encode_easy_auth(name, oid, roles=(role,))
    return browser.new_context(extra_http_headers={identity.HEADER: header}, **options)


@pytest.fixture
def signed_in_console(tmp_path, monkeypatch):
    """The ASGI app as the Functions host serves it (App Service Authentication identities), on uvicorn."""
    import uvicorn

    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")  # the platform's word that authentication is on
    store = replayed(tmp_path / "browser.db")
    console = web.Console(incidents=store.incidents, store=store, response=playbooks.load(),
                          identify=web.easy_auth_identity)  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(web.create_app(console), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(port)
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(10)
    store.close()


def test_an_on_call_engineer_approves_the_pending_step_and_sees_it_run_with_its_audit(browser, signed_in_console):
    base, store = signed_in_console
    context = signed_in_as(browser, "oncall@contoso.com", "0c0c0c0c-1111-2222-3333-444444444444", "Aegis.Approver")
    page = context.new_page()
    page.goto(f"{base}/console")
    assert page.locator("header .who").inner_text() == "oncall@contoso.com · approver"
    # superseded incidents (every event of theirs in another incident) are hidden until asked for
    shown = [v for v in views(store.incidents()) if v.status != "superseded"]
    assert page.locator("table.incidents tbody tr").count() == len(shown)
    page.get_by_role("link", name="Approvals").first.click()
    section = page.locator("section.approval", has=page.locator("h3", has_text="contain_ai_resource")).first
    key = section.get_attribute("id").removeprefix("step-")
    step = store.step(key)
    assert step.status == "awaiting_approval"
    # nothing corroborated the evidence (no source is configured here): the plan's 1 approval, plus one
    assert step.approvals == 2
    assert "UNCORROBORATED" in section.locator("dd.uncorroborated").inner_text()
    assert section.locator("p.state").inner_text().startswith("0 of 2: needs 2 people; yours would be the first")
    assert "API key (401)" in section.locator("dd.breaks").inner_text()  # what it breaks, in words
    assert section.locator("dd.undo").inner_text().startswith("restore_ai_resource puts back")
    assert not section.locator(".digest").is_visible()  # the exact requests are folded away, one click down
    section.locator("details.exact summary").click()
    assert section.locator(".digest").inner_text() == step.digest  # the exact parameters are shown, and bound
    assert json.loads(section.locator("pre.params").inner_text()) == step.params
    section.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{base}/console/approvals/{key}")
    assert page.locator("strong.status").inner_text() == "awaiting approval"  # 1 of 2
    assert page.locator("p.state").inner_text().startswith("1 of 2: waiting for a second approver, not you")
    assert page.get_by_role("button", name="Approve").count() == 0  # nothing for this person to press
    other = signed_in_as(browser, "duty@contoso.com", "0d0d0d0d-1111-2222-3333-444444444444", "Aegis.Approver")
    page2 = other.new_page()
    page2.goto(f"{base}/console/approvals/{key}")
    page2.get_by_role("button", name="Approve").click()
    page2.wait_for_url(f"{base}/console/approvals/{key}")
    other.close()
    page.reload()
    assert page.locator("strong.status").inner_text() == "dry run"
    audit = page.locator("table.audit tbody tr")
    events = [audit.nth(n).locator("td").nth(2).inner_text() for n in range(audit.count())]
    assert events[-2:] == ["approved", "dry_run"]
    assert "PATCH https://management.azure.com" in audit.last.inner_text()  # the exact call the step would make
    assert store.step(key).approvers == ("oncall@contoso.com", "duty@contoso.com")
    page.get_by_role("link", name="Audit log").click()
    newest = page.locator("table.audit tbody tr").first
    assert "dry_run" in newest.inner_text()
    assert "contain_ai_resource" in newest.inner_text()
    page.screenshot(path=str(Path(os.environ.get("AEGIS_SCREENSHOTS", "/tmp")) / "console-audit.png"), full_page=True)
    context.close()


@pytest.fixture
def aegis_serve(tmp_path):
    """`aegis serve` as a user starts it, on a store holding the scenario and a hostile alert."""
    db = tmp_path / "serve.db"
    replayed(db, hostile_alert()).close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aegis.cli", "serve", "--db", str(db), "--port", str(port), "--as", "Bob@Contoso.com"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(port, proc)
    yield f"http://127.0.0.1:{port}", db
    proc.terminate()
    proc.communicate(timeout=10)  # reaps it and closes its pipes


def test_self_approval_is_refused_and_an_alert_field_with_script_is_shown_as_text(browser, aegis_serve):
    base, db = aegis_serve
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{base}/console")
    assert page.locator("header .who").inner_text() == "bob@contoso.com · approver"

    page.goto(f"{base}/console?superseded=1")  # single-alert incidents that a campaign holds too
    link = page.locator("table.incidents a", has_text="AI.Azure_Jailbreak")
    hrefs = [link.nth(n).get_attribute("href") for n in range(link.count())]
    assert hrefs
    for href in hrefs:  # the hostile alert's incident shows its display name in the timeline
        page.goto(base + href)
        if XSS in page.locator("table.timeline").inner_text():
            break
    else:
        raise AssertionError("the hostile alert's text is not on any jailbreak incident page")
    assert page.evaluate("window.__xss") is None
    assert page.title() != "pwned"
    assert dialogs == []
    assert page.locator("main script, main img").count() == 0  # text, not elements

    page.select_option("select[name=playbook]", "ai-prompt-attack-user")
    page.get_by_role("button", name="Request").click()
    assert "The playbook's steps are recorded" in page.locator(".notice").inner_text()
    mine = page.locator("table.steps tbody tr", has_text="revoke_sessions").first
    mine.get_by_role("link").click()
    assert "by bob@contoso.com" in page.locator("dl.explain").inner_text()
    # the page offers the requester no decision, and says why
    assert "you requested this step, so another approver decides it" in page.locator("p.state").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0
    # a decision posted all the same (the form rebuilt by hand) is refused by the server
    key = page.url.rsplit("/", 1)[1]
    step = SqliteStore(db).step(key)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "aegis_csrf")
    answer = page.request.post(page.url, form={"decision": "approve", "digest": step.digest, "csrf": csrf},
                               headers={"origin": base}, max_redirects=0)  # fmt: skip
    assert answer.status == 409
    assert "bob@contoso.com requested this step and cannot decide it" in answer.text()
    page.reload()
    assert page.locator("strong.status").inner_text() == "awaiting approval"
    page.screenshot(
        path=str(Path(os.environ.get("AEGIS_SCREENSHOTS", "/tmp")) / "console-self-approval.png"), full_page=True
    )
    store = SqliteStore(db)
    try:
        refused = [s for s in store.steps() if s.requested_by == "bob@contoso.com" and s.action == "revoke_sessions"]
        assert refused
        assert all(s.approvers == () for s in refused)
    finally:
        store.close()


def test_an_analyst_narrows_the_incident_list_and_shares_the_view_as_a_link(browser, signed_in_console):
    base, store = signed_in_console
    context = signed_in_as(browser, "analyst@contoso.com", "0e0e0e0e-1111-2222-3333-444444444444", "Aegis.Reader")
    page = context.new_page()
    page.goto(f"{base}/console")
    rows = page.locator("table.incidents tbody tr")
    severities = [rows.nth(n).get_attribute("data-severity") for n in range(rows.count())]
    ranks = [-[s.value for s in SEVERITY_ORDER].index(s) for s in severities]
    assert ranks == sorted(ranks), severities  # the plan's tiers follow severity: most severe first
    assert "superseded" not in {rows.nth(n).get_attribute("data-status") for n in range(rows.count())}
    everything = views(store.incidents())
    high = sum(1 for v in everything if v.incident.severity.value == "high" and v.status != "superseded")
    assert page.locator("a.facet[data-severity=high] b").inner_text() == str(high)
    # an entity reads as its resource name; the full ARM id is on hover
    name = page.locator("td.entities .name", has_text="oai-contoso-prod").first
    assert name.inner_text() == "oai-contoso-prod"
    assert name.get_attribute("title").startswith("/subscriptions/")
    assert page.locator("figure.volume svg rect").count() >= 1  # events over time, drawn without a script

    page.locator("a.facet[data-severity=high]").click()  # a count is a filter
    page.wait_for_url("**/console?severity=high")
    assert {rows.nth(n).get_attribute("data-severity") for n in range(rows.count())} == {"high"}
    assert rows.count() == high

    page.fill("input[name=q]", "203.0.113")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**q=203.0.113**")
    assert "severity=high" in page.url  # the form keeps the other filters
    assert rows.count() >= 1
    for n in range(rows.count()):
        row_id = rows.nth(n).get_attribute("data-id")
        found = next(v.incident for v in everything if v.incident.id == row_id)
        assert found.severity.value == "high"
        assert any("203.0.113" in e.key for e in found.entities) or "203.0.113" in found.title
    shared = page.url
    other = signed_in_as(
        browser, "analyst@contoso.com", "0e0e0e0e-1111-2222-3333-444444444444", "Aegis.Reader"
    ).new_page()
    other.goto(shared)  # the link is the view
    assert other.locator("table.incidents tbody tr").count() == rows.count()
    other.context.close()

    page.goto(f"{base}/console?superseded=1")
    all_rows = page.locator("table.incidents tbody tr")
    assert all_rows.count() == len(everything)
    page.goto(f"{base}/console?q=no-such-thing-anywhere")
    assert page.locator("p.empty").inner_text() == "No incident matches these filters."
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/console")
    page.screenshot(
        path=str(Path(os.environ.get("AEGIS_SCREENSHOTS", "/tmp")) / "console-incidents.png"), full_page=True
    )
    context.close()


def test_an_analyst_acknowledges_comments_closes_and_reopens_an_incident(browser, signed_in_console):
    base, store = signed_in_console
    context = signed_in_as(browser, "ana@contoso.com", "0a0a0a0a-1111-2222-3333-444444444444", "Aegis.Analyst")
    page = context.new_page()
    page.goto(f"{base}/console")
    page.locator("table.incidents tbody tr a").first.click()
    incident_id = page.url.rsplit("/", 1)[1]
    triage = page.locator("section#triage")
    assert triage.locator(".triage-status").inner_text() == "new"
    assert page.get_by_role("button", name="Approve").count() == 0
    triage.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(f"**/console/incidents/{incident_id}#triage")
    assert triage.locator(".triage-status").inner_text() == "active"
    assert "ana@contoso.com" in triage.locator("dd.owner").inner_text()
    page.fill("textarea[name=text]", "Caller 203.0.113.45 is not ours; keys rotated by hand.\nWatching.")
    triage.get_by_role("button", name="Comment").click()
    comment = triage.locator(".comment").last
    assert "Watching." in comment.inner_text()
    assert "ana@contoso.com" in comment.inner_text()
    triage.locator("select[name=classification]").select_option("false_positive")
    triage.get_by_role("button", name="Close").click()  # no reason: refused, and said why
    assert "say why it is a false positive" in page.get_by_role("alert").inner_text()
    triage.locator("select[name=classification]").select_option("true_positive")
    triage.locator("form.close input[name=text]").fill("confirmed with the account owner")
    triage.get_by_role("button", name="Close").click()
    assert triage.locator(".triage-status").inner_text() == "closed"
    assert "True positive" in triage.locator(".classification").inner_text()
    page.screenshot(
        path=str(Path(os.environ.get("AEGIS_SCREENSHOTS", "/tmp")) / "console-incident.png"), full_page=True
    )
    triage.get_by_role("button", name="Reopen").click()
    assert triage.locator(".triage-status").inner_text() == "active"
    events = [a.event for a in store.audit_log() if a.action == "triage" and a.target == incident_id]
    assert events == ["acknowledged", "commented", "closed", "reopened"]
    assert {a.actor_id for a in store.audit_log() if a.action == "triage"} == {"0a0a0a0a-1111-2222-3333-444444444444"}
    page.goto(f"{base}/console?owner=me")
    assert page.locator("table.incidents tbody tr").count() == 1
    context.close()


def test_the_audit_log_names_people_by_name_and_object_id_filters_and_repeats_nothing(browser, signed_in_console):
    base, store = signed_in_console
    waiting = next(s for s in store.steps(status=["awaiting_approval"]))
    Responder(playbooks.load(), store).decide(waiting.key, "oncall@contoso.com", "0c0c-oid", approve=False,
                                              reason="not ours to contain")  # fmt: skip
    entries = store.audit_log()
    per_step = [(a.step, a.event) for a in entries if a.step]
    assert len(per_step) == len(set(per_step))  # a dry-run step is planned once: one entry, with its call
    context = signed_in_as(browser, "rita@contoso.com", "0f0f", "Aegis.Reader")
    page = context.new_page()
    page.goto(f"{base}/console/audit")
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == len(entries)
    assert rows.first.locator("td.who").inner_text() == "oncall@contoso.com\n0c0c-oid"  # newest first
    page.select_option("select[name=who]", "people")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**who=people**")
    assert rows.count() == 1
    assert "denied" in rows.first.inner_text()
    page.goto(f"{base}/console/audit?who=pipeline&event=planned")
    assert rows.count() == sum(1 for a in entries if a.event == "planned" and a.by_pipeline)
    assert {rows.nth(n).locator("td.who").inner_text() for n in range(rows.count())} == {"Aegis pipeline"}
    page.goto(f"{base}/console/audit?q=tickets:local")
    assert rows.count() == sum(1 for a in entries if "tickets:local" in a.target)
    assert "dry run: open or update" in rows.first.inner_text()
    context.close()


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 900)], ids=["phone", "desktop"])
def test_the_decision_is_on_the_first_screen_and_both_approve_and_deny_work(browser, signed_in_console, width, height):
    base, store = signed_in_console
    context = signed_in_as(browser, "oncall@contoso.com", "0c0c0c0c-1111-2222-3333-444444444444", "Aegis.Approver",
                           viewport={"width": width, "height": height}, is_mobile=width < 500)  # fmt: skip
    page = context.new_page()
    page.goto(f"{base}/console/approvals")
    first = page.locator("section.approval").first
    approve = first.get_by_role("button", name="Approve")
    box = approve.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= height  # no scrolling to reach the decision
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing cut off at the side
    assert page.locator("header .mode").is_visible()  # the dry-run badge too
    groups = page.locator("section.incident-group")
    expiries = [s.expires for s in store.steps(status=["awaiting_approval"])]
    assert groups.count() == len({s.incident for s in store.steps(status=["awaiting_approval"])})
    assert page.locator("p.lead").inner_text().startswith(f"{len(expiries)} step(s)")
    key = first.get_attribute("id").removeprefix("step-")
    first.locator("input[name=reason]").fill("the caller is our load test")
    first.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{base}/console/approvals/{key}")
    assert page.locator("strong.status").inner_text() == "denied"
    assert store.step(key).reason == "the caller is our load test"
    page.goto(f"{base}/console/approvals")
    other = page.locator("section.approval").first
    other_key = other.get_attribute("id").removeprefix("step-")
    assert other_key != key
    other.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{base}/console/approvals/{other_key}")
    assert store.step(other_key).approver_ids == ("0c0c0c0c-1111-2222-3333-444444444444",)
    page.screenshot(path=str(Path(os.environ.get("AEGIS_SCREENSHOTS", "/tmp")) / f"console-approvals-{width}.png"))
    context.close()


def test_the_coverage_page_draws_the_atlas_matrix_and_links_each_cell_to_its_detections(browser, tmp_path):
    import threading as _threading

    import uvicorn

    from aegis.correlate import coverage, detections
    from tests.conftest import shared_dir

    store = SqliteStore(tmp_path / "coverage.db")
    plan = playbooks.load()
    atlas = coverage.atlas_file(shared_dir() / "reference" / "atlas" / "ATLAS.yaml")
    console = web.Console.over(store, plan, web.local_identity("me@contoso.com", plan),
                               detections=detections.load().detections, atlas=atlas)  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(web.create_app(console), host="127.0.0.1", port=port, log_level="warning"))
    _threading.Thread(target=server.run, daemon=True).start()
    wait_for(port)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/console")
        page.get_by_role("link", name="Coverage").click()
        assert page.locator("section.tactic").count() == 16
        assert page.locator("section.tactic[data-tactic='AML.TA0002'] .technique.covered").count() == 0  # a gap
        jailbreak = page.locator(".technique[data-technique='AML.T0054']").first
        assert "covered" in jailbreak.get_attribute("class")
        jailbreak.locator("a.det", has_text="ai-prompt-attack-then-exfiltration").click()
        page.wait_for_url("**/console?detection=ai-prompt-attack-then-exfiltration**")
        assert (
            page.locator("select[name=detection] option[selected]").inner_text() == "ai-prompt-attack-then-exfiltration"
        )
        page.goto(f"http://127.0.0.1:{port}/console/coverage")
        assert page.locator("table.owasp tr[data-owasp=LLM10]").get_attribute("class") == "covered"
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the ATLAS Navigator layer").click()
        assert json.loads(Path(download.value.path()).read_text())["domain"] == "atlas-atlas"
        page.screenshot(path=str(Path(os.environ.get("AEGIS_SCREENSHOTS", "/tmp")) / "console-coverage.png"))
        page.close()
    finally:
        server.should_exit = True
        store.close()


# --- 3. the console's own sign-in (Flex Consumption), through a real browser ---


class EntraLike:
    """Entra ID as a browser and MSAL meet it, on https://localhost (another site than the console):
    the tenant's OpenID configuration and signing keys, an authorize page that signs Alice in at
    once and posts the code back (`form_post`, as Entra ID's page does with a script), and the token
    endpoint, which redeems a code only with its PKCE verifier and the managed identity's assertion."""

    def __init__(self, tmp: Path, assertion: str) -> None:
        import hashlib
        import html
        import secrets
        import ssl
        from base64 import urlsafe_b64encode
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        from tests.test_bot import CONSOLE_APP, SIGNER_JWK, TENANT, entra_token
        from tests.test_signin import id_token
        from tests.wire import _certificates

        tmp.mkdir()
        self.ca_file = tmp / "ca.pem"
        cert, key = _certificates(tmp, self.ca_file)
        codes: dict[str, dict[str, str]] = {}
        self.redeemed: list[dict[str, str]] = []
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
                    base = f"{idp.url}/{TENANT}"
                    self._send(200, json.dumps({
                        "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token", "jwks_uri": f"{base}/discovery/v2.0/keys",
                    }).encode())  # fmt: skip
                elif url.path == f"/{TENANT}/discovery/v2.0/keys":
                    self._send(200, json.dumps({"keys": [{**SIGNER_JWK, "kid": "k1"}]}).encode())
                elif url.path == f"/{TENANT}/oauth2/v2.0/authorize":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    code = secrets.token_urlsafe(16)
                    codes[code] = q
                    fields = "".join(f'<input type="hidden" name="{n}" value="{html.escape(v)}">'
                                     for n, v in (("code", code), ("state", q["state"])))  # fmt: skip
                    page = (f'<html><body onload="document.forms[0].submit()"><form method="post" '
                            f'action="{html.escape(q["redirect_uri"])}">{fields}</form></body></html>')  # fmt: skip
                    self._send(200, page.encode(), "text/html")
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                idp.redeemed.append(form)
                asked = codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "").encode()
                challenge = urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
                if (asked is None or form.get("redirect_uri") != asked["redirect_uri"] or challenge !=
                        asked["code_challenge"] or form.get("client_assertion") != assertion):  # fmt: skip
                    self._send(400, json.dumps({"error": "invalid_grant"}).encode())
                    return
                self._send(200, json.dumps({
                    "token_type": "Bearer", "expires_in": 3599, "scope": f"api://{CONSOLE_APP}/.default",
                    "access_token": entra_token(), "id_token": id_token(asked["nonce"]),
                }).encode())  # fmt: skip

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_browser_signs_in_to_the_console_through_entra_id_and_its_session_cookie_holds(browser, tmp_path):
    """Flex Consumption: no App Service Authentication. A real browser follows the whole flow:
    the console sends it to sign in, the (local) Entra ID posts the code back across sites, the
    app redeems it and sets the session cookie, and the page knows who signed in."""
    import ssl

    import httpx
    import uvicorn

    from aegis.approvals.botauth import EntraBearer
    from aegis.approvals.signin import FLOW_COOKIE, SESSION_COOKIE, SignIn
    from tests.test_bot import CONSOLE_APP, TENANT
    from tests.wire import _certificates

    assertion = "the-managed-identity's-token-for-api://AzureADTokenExchange"
    idp = EntraLike(tmp_path / "idp", assertion)
    trusted = ssl.create_default_context(cafile=str(idp.ca_file))
    verify = EntraBearer(TENANT, CONSOLE_APP, lambda url: httpx.get(url, verify=trusted).json(),
                         authority=idp.url).verify  # fmt: skip
    (tmp_path / "console").mkdir()
    cert, key = _certificates(tmp_path / "console", tmp_path / "console" / "ca.pem")
    store = replayed(tmp_path / "browser.db")
    port = free_port()
    flow = SignIn(TENANT, CONSOLE_APP, f"https://127.0.0.1:{port}/console", assertion=lambda: assertion,
                  authority=idp.url, tls=str(idp.ca_file))  # fmt: skip
    console = web.Console(incidents=store.incidents, store=store, response=playbooks.load(),
                          identify=web.bearer_identity(verify))  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(web.create_app(console, signin=flow), host="127.0.0.1", port=port,
                                           log_level="warning", ssl_certfile=str(cert), ssl_keyfile=str(key)))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(port)
    context = browser.new_context(ignore_https_errors=True)  # the test CAs are not the browser's
    try:
        page = context.new_page()
        page.goto(f"https://127.0.0.1:{port}/console/audit")
        page.wait_for_url(f"https://127.0.0.1:{port}/console/audit", timeout=10_000)
        assert page.locator("header .who").inner_text() == "alice@contoso.com · approver"
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies[SESSION_COOKIE]
        assert (session["httpOnly"], session["secure"], session["sameSite"]) == (True, True, "Lax")
        assert FLOW_COOKIE not in cookies  # the sign-in's state went with it
        assert [r["grant_type"] for r in idp.redeemed] == ["authorization_code"]
        page.goto(f"https://127.0.0.1:{port}/console/signout")  # Entra ID's sign-out page is not served here
        assert SESSION_COOKIE not in {c["name"] for c in context.cookies()}
    finally:
        context.close()
        server.should_exit = True
        thread.join(10)
        idp.close()
        store.close()
