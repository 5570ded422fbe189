"""The approvals API and the console as the Functions host runs them: `func.HttpRequest`s handed to
the decorated functions of `handlers/approvals.py`, through `func.AsgiMiddleware`, on a store the
bundled samples were replayed into."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import azure.functions as func
import orjson
import pytest

from aegis import runtime, settings
from aegis.approvals import identity
from aegis.pipeline import Message
from aegis.respond.record import Responder
from tests.conftest import SAMPLES
from tests.helpers import corroborate_all

HOST = "https://aegis-func.azurewebsites.net"
APPROVER = {"name": "alice@contoso.com", "oid": "a1", "roles": ("Aegis.Approver",)}
SECOND = {"name": "bob@contoso.com", "oid": "b2", "roles": ("Aegis.Approver",)}
READER = {"name": "rita@contoso.com", "oid": "r3", "roles": ("Aegis.Reader",)}


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from handlers import approvals

    monkeypatch.setenv("AEGIS_DB", str(tmp_path / "console.db"))
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")  # App Service Authentication on, as deployed
    runtime.reset()
    approvals._asgi.cache_clear()
    runtime.pipeline().process([Message(p.read_bytes(), hub="demo") for p in sorted(SAMPLES.rglob("*.json"))])
    # the approvals API is under test here, not corroboration: settle the steps as a source confirming them would
    corroborate_all(Responder(runtime.load_response(settings.get()), runtime.pipeline().store))
    yield approvals
    runtime.pipeline().store.close()
    runtime.reset()
    approvals._asgi.cache_clear()


def call(handler, method: str, path: str, *, who: dict | None = None, body: bytes = b"", headers: dict | None = None):
    h = {"host": HOST.removeprefix("https://"), **(headers or {})}
    if who is not None:
        h[identity.HEADER] = identity.encode_easy_auth(**who)
    req = func.HttpRequest(method=method, url=HOST + path, headers=h, body=body)
    return asyncio.run(handler(req, None))


def api(app, method: str, path: str, who: dict | None = None, payload: object = None, **kw):
    if payload is not None:
        kw.setdefault("headers", {"content-type": "application/json"})
        kw["body"] = orjson.dumps(payload)
    return call(app.approvals_api, method, path, who=who, **kw)


def pending(app) -> list[dict]:
    return json.loads(api(app, "GET", "/api/approvals", READER).get_body())["pending"]


def test_the_http_functions_and_the_timer_are_bound_as_the_host_needs(functions):
    api_fn, console_fn = (
        json.loads(functions[n].get_function_json())["bindings"] for n in ("approvals_api", "console")
    )
    trigger = next(b for b in api_fn if b["type"] == "httpTrigger")
    assert (trigger["authLevel"].lower(), trigger["route"]) == (
        "function",
        "api/approvals/{*rest}",
    )  # a function key too
    browser = next(b for b in console_fn if b["type"] == "httpTrigger")
    assert (browser["authLevel"].lower(), browser["route"]) == ("anonymous", "console/{*rest}")  # Entra ID sign-in
    [timer] = json.loads(functions["approvals_timer"].get_function_json())["bindings"]
    assert timer["type"] == "timerTrigger"
    host = json.loads((Path(__file__).parents[1] / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""  # the app's paths are the URL's


def test_no_principal_is_401_no_role_is_403(app):
    anonymous = api(app, "GET", "/api/approvals")
    assert anonymous.status_code == 401
    assert "not signed in" in json.loads(anonymous.get_body())["error"]
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    nobody = api(app, "GET", "/api/approvals", {"name": "x@contoso.com", "oid": "x", "roles": ("Other",)})
    assert nobody.status_code == 403
    reader = pending(app)
    assert reader
    assert {"id", "digest", "params", "would_call", "approvals_needed", "requested_by", "expires"} <= set(reader[0])
    step = reader[0]
    refused = api(app, "POST", f"/api/approvals/{step['id']}/approve", READER, {"digest": step["digest"]})
    assert refused.status_code == 403
    assert "may not decide" in json.loads(refused.get_body())["error"]


def test_the_principal_counts_only_where_app_service_authentication_is_known_to_be_on(app, monkeypatch):
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    assert api(app, "GET", "/api/approvals", READER).status_code == 401  # `func start`, a container: no platform
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    assert api(app, "GET", "/api/approvals", READER).status_code == 401  # a forged header would pass otherwise
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert api(app, "GET", "/api/approvals", READER).status_code == 200


def test_approve_binds_to_the_digest_and_a_replayed_decision_changes_nothing(app):
    step = next(s for s in pending(app) if s["approvals_needed"] == 1)
    url = f"/api/approvals/{step['id']}/approve"
    assert api(app, "POST", url, APPROVER, {"digest": "0" * 64}).status_code == 409
    assert (
        api(
            app, "POST", url, APPROVER, body=b"digest=x", headers={"content-type": "application/x-www-form-urlencoded"}
        ).status_code
        == 415
    )
    assert api(app, "POST", url, APPROVER, body=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert api(app, "POST", url, APPROVER, {"reason": "no digest"}).status_code == 400
    done = api(app, "POST", url, APPROVER, {"digest": step["digest"]})
    assert done.status_code == 200
    decided = json.loads(done.get_body())
    assert (decided["status"], decided["approvers"]) == ("dry_run", ["alice@contoso.com"])
    audit = runtime.pipeline().store.audit_log()
    again = api(app, "POST", url, APPROVER, {"digest": step["digest"]})  # a double click, a retried request
    assert again.status_code == 409
    assert "not awaiting approval" in json.loads(again.get_body())["error"]
    assert runtime.pipeline().store.audit_log() == audit
    got = json.loads(api(app, "GET", f"/api/approvals/{step['id']}", READER).get_body())
    assert got["status"] == "dry_run"
    assert got["would_call"] == step["would_call"]


def test_two_approvals_need_two_people_compared_by_object_id(app):
    step = next(s for s in pending(app) if s["approvals_needed"] == 2)
    url = f"/api/approvals/{step['id']}/approve"
    assert (
        json.loads(api(app, "POST", url, APPROVER, {"digest": step["digest"]}).get_body())["status"]
        == "awaiting_approval"
    )
    twice = api(app, "POST", url, APPROVER, {"digest": step["digest"]})
    assert twice.status_code == 409
    assert "already approved" in twice.get_body().decode()
    # the same object id under another sign-in name (a guest account, an alias) is still the same person
    alias = {**APPROVER, "name": "alice.alias@fabrikam.com"}
    assert alias["oid"] == APPROVER["oid"]
    again = api(app, "POST", url, alias, {"digest": step["digest"]})
    assert again.status_code == 409
    assert "already approved" in again.get_body().decode()
    # a person who merely calls themselves "aegis" is not the pipeline, and not the requester either
    done = api(app, "POST", url, {**SECOND, "name": "aegis"}, {"digest": step["digest"]})
    assert json.loads(done.get_body())["status"] == "dry_run"
    audit = runtime.pipeline().store.audit_log()
    actors = [(a.actor, a.actor_id, a.by_pipeline) for a in audit if a.step == step["id"] and a.event == "approved"]
    # a person named "aegis" is a person: by their object id, never taken for the pipeline
    assert actors == [(APPROVER["name"], APPROVER["oid"], False), ("aegis", SECOND["oid"], False)]


def test_only_approve_and_deny_are_verbs_and_nothing_else_is_recorded(app):
    step = pending(app)[0]
    before = len(runtime.pipeline().store.audit_log())
    for verb in ("approved", "APPROVE", "denyx", "reject"):
        answer = api(app, "POST", f"/api/approvals/{step['id']}/{verb}", APPROVER, {"digest": step["digest"]})
        assert answer.status_code == 400, verb
    assert len(runtime.pipeline().store.audit_log()) == before
    assert next(s for s in pending(app) if s["id"] == step["id"])["status"] == "awaiting_approval"


def test_deny_needs_a_reason_and_an_unknown_step_is_404(app):
    step = pending(app)[0]
    url = f"/api/approvals/{step['id']}/deny"
    assert api(app, "POST", url, APPROVER, {"digest": step["digest"]}).status_code == 409
    denied = api(app, "POST", url, APPROVER, {"digest": step["digest"], "reason": "a known red-team exercise"})
    assert json.loads(denied.get_body())["status"] == "denied"
    assert api(app, "GET", "/api/approvals/nope", READER).status_code == 404
    assert api(app, "POST", "/api/approvals/nope/approve", APPROVER, {"digest": "x"}).status_code == 404


def console(app, method: str, path: str, **kw):
    return call(app.console, method, path, **kw)


def test_the_console_through_the_function_is_signed_in_escaped_and_csrf_protected(app):
    assert console(app, "GET", "/console").status_code == 401
    page = console(app, "GET", "/console/approvals", who=APPROVER)
    assert page.status_code == 200
    assert page.mimetype.startswith("text/html")
    html = page.get_body().decode()
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in page.headers["content-security-policy"]
    cookie = re.search(r"aegis_csrf=([^;]+)", page.headers["set-cookie"]).group(1)
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    assert "httponly" in page.headers["set-cookie"].lower()
    key = re.search(r'action="/console/approvals/([0-9a-f]{32})"', html).group(1)
    digest = re.search(
        rf'action="/console/approvals/{key}".*?name="digest" value="([0-9a-f]{{64}})"', html, re.S
    ).group(1)
    form = f"decision=approve&digest={digest}&csrf={cookie}".encode()
    post = {"content-type": "application/x-www-form-urlencoded", "cookie": f"aegis_csrf={cookie}"}
    no_token = console(app, "POST", f"/console/approvals/{key}", who=APPROVER, body=f"decision=approve&digest={digest}".encode(),
                       headers=post)  # fmt: skip
    assert no_token.status_code == 403
    cross_site = console(app, "POST", f"/console/approvals/{key}", who=APPROVER, body=form,
                         headers={**post, "origin": "https://evil.example"})  # fmt: skip
    assert cross_site.status_code == 403
    assert runtime.pipeline().store.step(key).status == "awaiting_approval"
    ok = console(app, "POST", f"/console/approvals/{key}", who=APPROVER, body=form, headers={**post, "origin": HOST})
    assert ok.status_code == 303
    assert ok.headers["location"] == f"/console/approvals/{key}"
    assert runtime.pipeline().store.step(key).approvers == ("alice@contoso.com",)


def test_a_reader_sees_the_console_but_no_decision_buttons(app):
    page = console(app, "GET", "/console/approvals", who=READER)
    html = page.get_body().decode()
    assert page.status_code == 200
    assert "rita@contoso.com · reader" in html
    assert 'name="decision"' not in html
    assert '<pre class="params">' in html  # the exact parameters are there to read


def test_the_incident_page_shows_the_timeline_next_steps_and_enrichment(app, functions):
    [timer] = json.loads(functions["enrich_timer"].get_function_json())["bindings"]
    assert timer["type"] == "timerTrigger"
    from handlers import enrich

    enrich.enrich_timer(None)  # the enrichment timer, as the host calls it (local enricher on SQLite)
    incident = next(i for i in runtime.pipeline().store.incidents() if i.detection == "ai-control-plane-tampering")
    page = console(app, "GET", f"/console/incidents/{incident.id}", who=READER)
    html = page.get_body().decode()
    assert page.status_code == 200
    assert html.count('<circle class="mark"') == len(incident.timeline)  # the evidence chart: one mark per event
    assert "Response tier: <strong>P1 - page on-call now</strong>" in html
    assert "ai-credential-compromise" in html
    assert "<strong>local</strong> · ok" in html
    assert "203.0.113.0/24" in html
    # the alert it holds, as an analyst reads it: display name, portal link, ATT&CK tactic of its intent
    assert "<h2>Alerts</h2>" in html
    assert '<a href="https://portal.azure.com/' in html
    assert "TA0" in html
    assert f"Why</dt><dd>{incident.why}" in html
    assert f"Grouped on</dt><dd><code>{incident.group}</code>" in html
