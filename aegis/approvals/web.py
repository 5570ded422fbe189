"""The approvals API and the analyst console: one ASGI app (Starlette), served by Azure Functions
(`handlers/approvals.py`, through `func.AsgiMiddleware`) and by `aegis serve` (uvicorn).

- `/api/approvals` (JSON): list pending, get one, approve, deny. Decisions name the digest of the
  parameters the caller saw. In Azure the routes also need a function key (the host checks it).
- `/console` (HTML): incidents, an incident with its evidence timeline, pending approvals with
  their exact parameters and Approve / Deny, the audit log.

Every request is identified (`identify`: App Service Authentication's principal in Azure, the
local user under `aegis serve`) and authorized by the response plan's `access`: none → 401,
no role → 403. Decisions are POSTs; the console's carry a CSRF token (double-submit cookie,
SameSite=Strict, compared in constant time) and must come from the console's own origin.
Incident fields are attacker-controlled: templates autoescape, pages load no script at all, and the
Content-Security-Policy forbids scripts and anything not served by the app.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aegis.approvals import identity
from aegis.approvals.bot import Decisions
from aegis.approvals.botauth import BotAuth, Unauthorized
from aegis.approvals.explain import explain, grouped
from aegis.approvals.identity import Forbidden, NotSignedIn, Principal
from aegis.approvals.listing import RANGES, Query, listing
from aegis.approvals.names import label, link, resource_names
from aegis.approvals.signin import (
    FLOW_COOKIE,
    FLOW_FOR,
    SESSION_COOKIE,
    SignIn,
    SignInFailed,
    SignInUnavailable,
    safe_next,
)
from aegis.approvals.timeline import chart
from aegis.approvals.triage import Triager, TriageRefused
from aegis.arm import try_parse_resource_id
from aegis.correlate import coverage, mapping
from aegis.correlate.coverage import Atlas
from aegis.correlate.detections import Detection
from aegis.errors import AegisError, InputNotFound
from aegis.records import (
    CLASSIFICATIONS,
    TRIAGE_STATUSES,
    AuditEntry,
    Enrichment,
    Incident,
    StepRecord,
    View,
    alert_details,
    portal_link,
    views,
)
from aegis.respond import planner
from aegis.respond.playbooks import Response as Plan
from aegis.respond.record import DecisionRefused, Responder, call
from aegis.store import Store

log = structlog.get_logger("aegis.console")
HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "aegis_csrf"
MAX_FORM = 16_384
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make the browser send `Origin: null` on our own forms
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}
_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


@dataclass
class Console:
    """What the app reads and writes: the incidents, the response records, the plan, and who asks."""

    incidents: Callable[[], list[Incident]]
    store: Store
    response: Plan
    identify: Callable[[Request], Principal]
    after_approval: Callable[[StepRecord], None] | None = None  # execute mode: run the approved step
    enrichment: Callable[[str], list[Enrichment]] | None = None  # what the enrichers found, by incident
    title: str = "Aegis"
    zone: tzinfo = UTC  # the times on its pages, with the zone named
    detections: Sequence[Detection] = ()  # the loaded detections, for the coverage page
    atlas: Atlas | None = None  # the ATLAS data the coverage matrix is drawn over (None: the shipped subset)

    @classmethod
    def over(
        cls, store: Store, response: Plan, identify: Callable[[Request], Principal], *,
        after_approval: Callable[[StepRecord], None] | None = None, zone: tzinfo = UTC,
        detections: Sequence[Detection] = (), atlas: Atlas | None = None,
    ) -> Console:  # fmt: skip
        """The console over one store: its incidents, response records and enrichment."""
        return cls(store.incidents, store, response, identify, after_approval, store.enrichment, zone=zone,
                   detections=detections, atlas=atlas)  # fmt: skip

    # --- helpers ---

    def _who(self, request: Request, *, decide: bool = False, triage: bool = False) -> Principal:
        return identity.require(self.identify(request), self.response.plan, decide=decide, triage=triage)

    def _views(self) -> list[View]:
        return views(self.incidents())

    def _render(self, request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        who = self._who(request)
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        page = _env.get_template(template).render(
            title=self.title, who=who, may_decide=identity.may_decide(who, self.response.plan), csrf=token,
            may_triage=identity.may_triage(who, self.response.plan),
            mode=self.response.plan.mode, zone=self.zone, **values,
        )  # fmt: skip
        response = HTMLResponse(page, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/console")  # fmt: skip
        return response

    async def _form(self, request: Request) -> dict[str, str]:
        """The decision form, once the request is shown to come from the console itself."""
        _same_origin(request)
        fields = await small_form(request)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("csrf", "").encode()):
            raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
        return fields

    def _incident(self, ident: str) -> Incident:
        found = next((i for i in self.incidents() if i.id == ident), None)
        if found is None:
            raise HTTPException(404, "no such incident")
        return found

    def _step(self, key: str) -> StepRecord:
        step = self.store.step(key)
        if step is None:
            raise HTTPException(404, f"no step {key}")
        return step

    def _decide(self, key: str, who: Principal, *, approve: bool, digest: str, reason: str) -> StepRecord:
        try:
            step = Responder(self.response, self.store).decide(key, who.name, who.id, approve=approve, reason=reason,
                                                               digest=digest)  # fmt: skip
        except DecisionRefused as exc:
            log.warning("decision_refused", step=key, person=who.name, reason=str(exc))
            raise
        log.info("decision", step=key, person=who.name, status=step.status)
        if step.status == "approved" and self.after_approval is not None:
            self.after_approval(step)
            step = self.store.step(key) or step
        return step

    # --- console pages ---

    def incidents_page(self, request: Request) -> Response:
        triages = self.store.triages()
        me = self._who(request).name
        shown = listing(self._views(), Query.parse(request.query_params), self.response.plan.tiers, triages, me=me)
        waiting = self.store.steps(status=["awaiting_approval"])
        pending: dict[str, int] = {}
        for s in waiting:
            pending[s.incident] = pending.get(s.incident, 0) + 1
        return self._render(request, "incidents.html", shown=shown, q=shown.query, pending=pending,
                            waiting=len(waiting), ranges=list(RANGES), triages=triages,
                            triage_statuses=TRIAGE_STATUSES)  # fmt: skip

    def incident_page(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        found = [v for v in self._views() if v.incident.id == request.path_params["incident"]]
        if not found:
            raise HTTPException(404, "no such incident")
        view = found[0]
        steps = self.store.steps(incident=view.incident.id)
        plan = self.response.plan
        books = [self.response.playbooks[n] for n in planner.playbooks_for(view.incident, plan)]
        advice = {"tier": plan.tiers[view.incident.severity], "playbooks": books}
        return self._render(
            request, "incident.html", status=status, view=view, i=view.incident, chart=chart(view.incident),
            advice=advice,
            enrichment=self.enrichment(view.incident.id) if self.enrichment else [],
            alerts=alert_details(self.store.evidence(view.incident)),
            atlas=mapping.atlas_names(), owasp=mapping.owasp_names(), steps=steps, calls=_calls(steps),
            playbooks=sorted(self.response.playbooks), message=request.query_params.get("message"),
            triage=Triager(self.store).current(view.incident.id), classifications=CLASSIFICATIONS, error=error,
            sentinel=_sentinel(self.store.enrichment(view.incident.id, kind="deliver")),
        )  # fmt: skip

    async def triage_form(self, request: Request) -> Response:
        who = self._who(request, triage=True)
        fields = await self._form(request)
        incident_id = request.path_params["incident"]
        seen = fields.get("revision", "")
        try:
            Triager(self.store).apply(
                self._incident(incident_id), fields.get("verb", ""), who.name, who.id,
                seen=int(seen) if seen.isdigit() else None, owner=fields.get("owner", ""),
                classification=fields.get("classification", ""), text=fields.get("text", ""),
            )  # fmt: skip
        except TriageRefused as exc:
            return self.incident_page(request, error=str(exc), status=409)
        log.info("triage", incident=incident_id, person=who.name, verb=fields.get("verb"))
        return RedirectResponse(f"/console/incidents/{incident_id}#triage", status_code=303)

    async def request_playbook(self, request: Request) -> Response:
        who = self._who(request, decide=True)
        fields = await self._form(request)
        incident_id = request.path_params["incident"]
        incident = self._incident(incident_id)
        try:
            steps = Responder(self.response, self.store).request(incident, fields.get("playbook", ""), who.name, who.id)
        except InputNotFound as exc:
            raise HTTPException(400, str(exc)) from None
        log.info("playbook_requested", incident=incident_id, person=who.name, steps=len(steps))
        return RedirectResponse(f"/console/incidents/{incident_id}?message=requested", status_code=303)

    def approvals_page(self, request: Request) -> Response:
        waiting = self.store.steps(status=["awaiting_approval"])
        who = self._who(request)
        incidents = self.incidents()
        groups = grouped(waiting, who, {i.id: i.title for i in incidents},
                         may_decide=identity.may_decide(who, self.response.plan))  # fmt: skip
        return self._render(request, "approvals.html", groups=groups, steps=waiting, calls=_calls(waiting),
                            assets=_assets_of(incidents))  # fmt: skip

    def inventory_page(self, request: Request) -> Response:
        """The AI estate: the blind spots (open, then the recently fixed), the assets, what changed."""
        findings = self.store.findings()
        return self._render(request, "inventory.html", assets=self.store.assets(),
                            open=[f for f in findings if f.open], closed=[f for f in findings if not f.open][:50],
                            changes=self.store.asset_changes(limit=100))  # fmt: skip

    def step_page(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        step = self._step(request.path_params["key"])
        decision = request.query_params.get("decision")
        who = self._who(request)
        return self._render(
            request, "step.html", status=status, step=step, calls=_calls([step]),
            x=explain(step, who, may_decide=identity.may_decide(who, self.response.plan)),
            titles=self._titles(), decision=decision if decision in {"approve", "deny"} else None, error=error,
            audit=[a for a in self.store.audit_log() if a.step == step.key],
        )  # fmt: skip

    async def decide_form(self, request: Request) -> Response:
        who = self._who(request, decide=True)
        fields = await self._form(request)
        key = request.path_params["key"]
        self._step(key)
        decision = fields.get("decision")
        if decision not in {"approve", "deny"}:
            raise HTTPException(400, "decision must be approve or deny")
        try:
            self._decide(key, who, approve=decision == "approve", digest=fields.get("digest", ""),
                         reason=fields.get("reason", ""))  # fmt: skip
        except DecisionRefused as exc:
            return self.step_page(request, error=str(exc), status=409)
        return RedirectResponse(f"/console/approvals/{key}", status_code=303)

    def audit_page(self, request: Request) -> Response:
        every = list(reversed(self.store.audit_log()))
        shown, asked = audit_filter(every, request.query_params)
        return self._render(request, "audit.html", entries=shown[:AUDIT_ROWS], matching=len(shown), total=len(every),
                            asked=asked, events=sorted({a.event for a in every}),
                            actions=sorted({a.action for a in every}))  # fmt: skip

    def coverage_page(self, request: Request) -> Response:
        cov = coverage.coverage(self.detections)
        data = self.atlas or coverage.shipped_atlas()
        return self._render(request, "coverage.html", columns=coverage.matrix(cov, data), atlas=data,
                            counts=coverage.counts(cov, data), owasp=coverage.owasp_rows(cov),
                            detections=len(self.detections))  # fmt: skip

    def coverage_layer(self, request: Request) -> Response:
        self._who(request)
        layer = coverage.navigator_layer(coverage.coverage(self.detections), self.atlas or coverage.shipped_atlas())
        return Response(orjson.dumps(layer, option=orjson.OPT_INDENT_2), media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="aegis-atlas-layer.json"'})  # fmt: skip

    def _titles(self) -> dict[str, str]:
        return {i.id: i.title for i in self.incidents()}

    # --- JSON API ---

    def api_list(self, request: Request) -> Response:
        self._who(request)
        waiting = self.store.steps(status=["awaiting_approval"])
        return _json({"pending": [_api_step(s) for s in waiting]})

    def api_get(self, request: Request) -> Response:
        self._who(request)
        return _json(_api_step(self._step(request.path_params["key"])))

    async def api_decide(self, request: Request) -> Response:
        if request.path_params["verb"] not in {"approve", "deny"}:  # before anything is read or recorded
            raise HTTPException(400, "the decision is /approve or /deny")
        who = self._who(request, decide=True)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HTTPException(415, "send the decision as application/json")
        raw = await request.body()
        if len(raw) > MAX_FORM:
            raise HTTPException(413, "body too large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("digest"), str):
            raise HTTPException(400, 'send {"digest": "<the step\'s digest>", "reason": "..."}')
        reason = body.get("reason", "")
        key = request.path_params["key"]
        self._step(key)
        try:
            step = self._decide(key, who, approve=request.path_params["verb"] == "approve", digest=body["digest"],
                                reason=reason if isinstance(reason, str) else "")  # fmt: skip
        except DecisionRefused as exc:
            return _json({"error": str(exc)}, status=409)
        return _json(_api_step(step))


AUDIT_ROWS = 1000


def _assets_of(incidents: list[Incident]) -> dict[str, dict[str, Any]]:
    """Each incident's asset as the inventory knew it (owner, criticality), by incident id."""
    return {i.id: a for i in incidents if isinstance(a := i.attributes.get("asset"), dict)}


def _sentinel(delivered: list[Enrichment]) -> dict[str, Any] | None:
    """The Sentinel incident the incident was delivered as: its number and portal link (if it is one)."""
    for d in delivered:
        if d.name == "sentinel" and d.status == "ok":
            return {"number": d.result.get("number"), "url": portal_link(d.result.get("url"))}
    return None


def audit_filter(entries: list[AuditEntry], params: Any) -> tuple[list[AuditEntry], dict[str, str]]:
    """The entries the audit page's filters keep: `who` (people, pipeline, or part of a name or
    object id), `event`, `action`, and `q` (part of the step, target or detail)."""
    asked = {k: str(params.get(k, "")).strip()[:200] for k in ("who", "event", "action", "q")}
    who, q = asked["who"].lower(), asked["q"].lower()

    def keep(a: AuditEntry) -> bool:
        if (who == "people" and a.by_pipeline) or (who == "pipeline" and not a.by_pipeline):
            return False
        if who not in ("", "people", "pipeline") and who not in a.actor.lower() and who != (a.actor_id or "").lower():
            return False
        if (asked["event"] and a.event != asked["event"]) or (asked["action"] and a.action != asked["action"]):
            return False
        return not q or any(q in x.lower() for x in (a.step, a.target, a.detail))

    return [a for a in entries if keep(a)], asked


def _calls(steps: list[StepRecord]) -> dict[str, str]:
    return {s.key: call(s.action, s.params) for s in steps}


def _api_step(step: StepRecord) -> dict[str, Any]:
    return {**step.summary(), "would_call": call(step.action, step.params)}


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def _same_origin(request: Request) -> None:
    """Refuse a decision posted from another site (with the token check, CSRF is closed twice)."""
    site = request.headers.get("sec-fetch-site", "same-origin")
    origin = request.headers.get("origin")
    foreign = origin is not None and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""))
    if site not in {"same-origin", "none"} or foreign:
        raise HTTPException(403, "decisions are taken only from the console's own pages")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class BotEndpoint:
    """`/api/messages`: what Teams sends the bot (the cards' Universal Actions), proven by its token."""

    auth: BotAuth
    decisions: Decisions
    max_body: int = 262_144  # an invoke is a few KB

    async def messages(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > self.max_body:
            return _json({"error": "activity too large"}, status=413)
        try:
            activity = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _json({"error": "not JSON"}, status=400)
        if not isinstance(activity, dict):
            return _json({"error": "not an activity"}, status=400)
        try:
            self.auth.verify(request.headers.get("authorization"), activity)
        except Unauthorized as exc:
            log.warning("bot_unauthorized", reason=str(exc)[:200])
            return _json({"error": "unauthorized"}, status=401)  # the reason is logged, not told
        answer = await run_in_threadpool(self.decisions.answer, activity)  # the store and Graph block
        return Response(status_code=200) if answer is None else _json(answer)


def _unavailable(exc: SignInUnavailable) -> Response:
    log.warning("signin_unavailable", reason=str(exc)[:300])
    text = "Entra ID could not be reached to sign you in: try again in a minute (the reason is logged)"
    return HTMLResponse(_env.get_template("error.html").render(title="Sign-in", status=502, text=text), status_code=502)


async def small_form(request: Request) -> dict[str, str]:
    """A posted form's text fields: at most `MAX_FORM` bytes (said up front) and ten fields."""
    length = request.headers.get("content-length") or "0"
    if not length.isdigit() or int(length) > MAX_FORM:
        raise HTTPException(413, "form too large (or no valid Content-Length)")
    async with request.form(max_files=0, max_fields=10) as form:
        return {k: v for k, v in form.items() if isinstance(v, str)}


@dataclass(frozen=True)
class SignInPages:
    """`/console/signin`, its callback and `/console/signout` (`signin.py`)."""

    flow: SignIn

    def routes(self) -> list[Route]:
        return [Route("/console/signin", self.start), Route("/console/signout", self.signout),
                Route("/console/signin/callback", self.callback, methods=["POST"])]  # fmt: skip

    async def start(self, request: Request) -> Response:
        try:
            url, cookie = await run_in_threadpool(self.flow.start, request.query_params.get("next"))
        except SignInUnavailable as exc:
            return _unavailable(exc)
        response = RedirectResponse(url, status_code=302)
        response.set_cookie(FLOW_COOKIE, cookie, max_age=FLOW_FOR, httponly=True, secure=True, samesite="none")
        return response

    async def callback(self, request: Request) -> Response:
        """Entra ID posts the code here (`form_post`)."""
        fields = await small_form(request)
        try:  # the token endpoint is a blocking call
            token, lifetime, goto = await run_in_threadpool(self.flow.finish, request.cookies.get(FLOW_COOKIE), fields)
        except SignInUnavailable as exc:
            return _unavailable(exc)
        except SignInFailed as exc:
            log.warning("signin_failed", reason=str(exc)[:300])
            page = _env.get_template("error.html").render(title="Sign-in", status=401, text=str(exc))
            failed = HTMLResponse(page, status_code=401)
            failed.delete_cookie(FLOW_COOKIE, httponly=True, secure=True, samesite="none")
            return failed
        response = RedirectResponse(goto, status_code=303)
        response.delete_cookie(FLOW_COOKIE, httponly=True, secure=True, samesite="none")
        response.set_cookie(SESSION_COOKIE, token, max_age=max(lifetime - 60, 60), httponly=True, secure=True,
                            samesite="lax")  # fmt: skip
        log.info("signed_in")
        return response

    async def signout(self, request: Request) -> Response:
        response = RedirectResponse(self.flow.signed_out, status_code=303)
        response.delete_cookie(SESSION_COOKIE, httponly=True, secure=True, samesite="lax")
        return response


def create_app(
    console: Console, *, allowed_hosts: Sequence[str] | None = None, bot: BotEndpoint | None = None,
    signin: SignIn | None = None,
) -> Starlette:  # fmt: skip
    """The ASGI app. `allowed_hosts`: the Host names it answers (`aegis serve`: loopback, so that a
    page on another site cannot reach it through DNS rebinding); None answers any (the Functions
    host, whose front end routes only the app's own names). `bot`: the Teams bot's `/api/messages`.
    `signin`: the console's own browser sign-in (`signin.py`): a console page asked for by someone
    not signed in sends them there instead of answering 401."""
    c = console
    pages = SignInPages(signin) if signin is not None else None

    async def errors(request: Request, exc: Exception) -> Response:
        status, text = 500, "internal error"
        if isinstance(exc, NotSignedIn) and pages is not None and request.method == "GET" and \
                request.url.path.startswith("/console"):  # fmt: skip
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/signin?next={quote(safe_next(path), safe='')}", status_code=303)
        if isinstance(exc, NotSignedIn):
            status, text = 401, str(exc)
        elif isinstance(exc, Forbidden):
            status, text = 403, str(exc)
        elif isinstance(exc, HTTPException):
            status, text = exc.status_code, str(exc.detail)
        elif isinstance(exc, InputNotFound):
            status, text = 404, str(exc)
        elif isinstance(exc, AegisError):
            status, text = 400, str(exc)
        if request.url.path.startswith("/api/"):
            response: Response = _json({"error": text}, status=status)
        else:
            page = _env.get_template("error.html").render(title=c.title, status=status, text=text)
            response = HTMLResponse(page, status_code=status)
        if status == 401:
            response.headers["www-authenticate"] = 'Bearer realm="aegis"'
        return response

    app = Starlette(
        routes=[
            Route("/", lambda r: RedirectResponse("/console", status_code=307)),
            Route("/console", c.incidents_page),
            Route("/console/incidents/{incident}", c.incident_page),
            Route("/console/incidents/{incident}/playbooks", c.request_playbook, methods=["POST"]),
            Route("/console/incidents/{incident}/triage", c.triage_form, methods=["POST"]),
            Route("/console/approvals", c.approvals_page),
            Route("/console/approvals/{key}", c.step_page),
            Route("/console/approvals/{key}", c.decide_form, methods=["POST"]),
            Route("/console/audit", c.audit_page),
            Route("/console/coverage", c.coverage_page),
            Route("/console/inventory", c.inventory_page),
            Route("/console/coverage/atlas-layer.json", c.coverage_layer),
            Mount("/console/static", StaticFiles(directory=HERE / "static"), name="static"),
            Route("/api/approvals", c.api_list),
            Route("/api/approvals/{key}", c.api_get),
            Route("/api/approvals/{key}/{verb:str}", c.api_decide, methods=["POST"]),
            *([Route("/api/messages", bot.messages, methods=["POST"])] if bot is not None else []),
            *(pages.routes() if pages is not None else []),
        ],
        exception_handlers={HTTPException: errors, AegisError: errors},
        middleware=[Middleware(SecurityHeaders)]
        + ([Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts is not None else []),
    )

    return app


class SecurityHeaders:
    """Adds the console's security headers to every response (unless a route set its own)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def local_identity(name: str, plan: Plan) -> Callable[[Request], Principal]:
    """`aegis serve`: the person who started it, an approver (it is their own machine and store)."""
    person = Principal(
        name=name.strip().lower(), id=name.strip().lower(), roles=frozenset(plan.plan.access.approver_roles)
    )

    def identify(_: Request) -> Principal:
        return person

    return identify


def easy_auth_identity(request: Request) -> Principal:
    return identity.from_easy_auth(request.headers)


def bearer_identity(verify: Callable[[str | None], Any]) -> Callable[[Request], Principal]:
    """Who calls, by the Entra ID access token they present (`AEGIS_CONSOLE_AUTH=bearer`): in the
    `Authorization` header, or, on console pages, as the session cookie the sign-in set."""

    def identify(request: Request) -> Principal:
        session = request.cookies.get(SESSION_COOKIE)
        if "authorization" not in request.headers and session and request.url.path.startswith("/console"):
            return identity.from_bearer({"authorization": f"Bearer {session}"}, verify)
        return identity.from_bearer(request.headers, verify)

    return identify


def when(value: datetime | str | None, zone: tzinfo = UTC) -> str:
    """A time as people read it: in the console's zone, the zone named (`2026-11-20 10:02:40 CET`);
    an ISO 8601 string is read first (what enrichers keep); anything else is shown as it is."""
    if isinstance(value, str):
        parsed = _parse_time(value)
        if parsed is None:
            return value
        value = parsed
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")


def _parse_time(text: str) -> datetime | None:
    if len(text) > 40 or not _ISO.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def scalar(value: object, zone: tzinfo = UTC) -> tuple[str, str]:
    """(what to show, what to show on hover) for one value of an enricher's result: times in the
    console's zone, ARM ids as resource names (the id on hover), the rest as text."""
    if isinstance(value, str):
        if _parse_time(value) is not None:
            return when(value, zone), value
        if value.startswith("/subscriptions/") and try_parse_resource_id(value):
            return resource_names(value), value
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip("."), ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}", ""
    return str(value), ""


_env.filters["when"] = when
_env.filters["scalar"] = scalar
_env.filters["label"] = label
_env.filters["link"] = link
_env.filters["json"] = lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()
