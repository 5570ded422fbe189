"""The incidents list: order, facets, filters as query parameters, the volume chart, entity names and links."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from starlette.datastructures import QueryParams

from aegis.approvals.listing import Query, listing, volume
from aegis.approvals.names import label, link
from aegis.events import AiProject, AiResource, DefenderAlert, Host, Ip, ModelDeployment, Severity, User
from aegis.records import Incident, TimelineEntry, View

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ACCOUNT = "/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai/providers/microsoft.cognitiveservices/accounts/oai-prod"
OTHER = ACCOUNT.replace("oai-prod", "oai-sandbox")
TIERS = {Severity.CRITICAL: "P1", Severity.HIGH: "P1", Severity.MEDIUM: "P2", Severity.LOW: "P3",
         Severity.INFORMATIONAL: "P3"}  # fmt: skip


def incident(ident: str, severity: Severity, start: int, *, minutes: int = 5, count: int = 3, account: str = ACCOUNT,
             detection: str = "ai-key-brute-force", tenant: str | None = None, title: str = "") -> Incident:  # fmt: skip
    first = T0 + timedelta(minutes=start)
    timeline = tuple(TimelineEntry(first + timedelta(minutes=m), f"{ident}-{m}", "k", "resource_log")
                     for m in range(0, minutes + 1, max(minutes, 1)))  # fmt: skip
    return Incident(id=ident, detection=detection, bucket="b", group="g", title=title or f"incident {ident}",
                    severity=severity, first_seen=first, last_seen=first + timedelta(minutes=minutes),
                    entities=(AiResource(resource_id=account), Ip(prefix="203.0.113.0/24", address="203.0.113.7")),
                    atlas=(), owasp_llm=(), event_ids=(), event_count=count, timeline=timeline, tenant=tenant)  # fmt: skip


def views() -> list[View]:
    return [
        View(incident("low-old", Severity.LOW, 0), "closed"),
        View(incident("high-new", Severity.HIGH, 60), "open"),
        View(incident("high-old", Severity.HIGH, 10), "open"),
        View(
            incident(
                "crit",
                Severity.CRITICAL,
                30,
                account=OTHER,
                detection="ai-control-plane-tampering",
                tenant="0f7c2d1a-0000-4000-8000-000000000001",
            ),
            "open",
        ),
        View(incident("medium", Severity.MEDIUM, 5, title="Jailbreak on the sandbox"), "open"),
        View(incident("dup", Severity.HIGH, 61), "superseded", superseded_by="high-new"),
    ]


def ids(query: Query) -> list[str]:
    return [v.incident.id for v in listing(views(), query, TIERS).views]


def test_the_queue_is_open_first_then_tier_then_severity_then_the_oldest_with_superseded_hidden():
    assert ids(Query()) == ["crit", "high-old", "high-new", "medium", "low-old"]
    # a tier shared by two severities still orders by severity inside it; the oldest of a severity first
    shown = listing(views(), Query(), TIERS)
    assert shown.hidden == 1
    assert shown.total == 6
    assert ids(Query(superseded=True))[-1] == "dup"
    assert ids(Query(sort="recent"))[:2] == ["high-new", "crit"]


def test_facet_counts_apply_every_other_filter_and_name_every_level():
    shown = listing(views(), Query(severity=("high",)), TIERS)
    assert dict(shown.by_severity) == {"critical": 1, "high": 2, "medium": 1, "low": 1, "informational": 0}
    assert dict(shown.by_status) == {"open": 2, "closed": 0, "superseded": 1}  # statuses of the high ones
    assert [v.incident.id for v in shown.views] == ["high-old", "high-new"]


def test_filters_come_from_query_parameters_and_round_trip_through_a_link():
    params = QueryParams("severity=high&severity=critical&status=open&detection=ai-key-brute-force&q=203.0.113")
    query = Query.parse(params)
    assert query.severity == ("critical", "high")
    assert query.status == ("open",)
    assert ids(query) == ["high-old", "high-new"]
    assert Query.parse(QueryParams(query.link().partition("?")[2])) == query
    assert query.link(severity=()) == "/console?status=open&detection=ai-key-brute-force&q=203.0.113"


def test_unknown_or_hostile_parameter_values_are_ignored_never_an_error():
    query = Query.parse(QueryParams("severity=<script>&status=nope&range=1y&sort=drop+table&q=" + "x" * 5000))
    assert (query.severity, query.status, query.range, query.sort) == ((), (), "", "priority")
    assert len(query.q) == 200


def test_search_resource_tenant_and_time_range_narrow_the_list():
    assert ids(Query(q="jailbreak")) == ["medium"]
    assert ids(Query(q="HIGH-OLD")) == ["high-old"]  # ids, case-insensitively
    assert ids(Query(resource="oai-sandbox")) == ["crit"]  # by the resource's name as well as its ARM id
    assert ids(Query(tenant="0f7c2d1a-0000-4000-8000-000000000001")) == ["crit"]
    # the last hour of evidence, up to the newest incident's last event (10:06): from 09:06 on
    assert ids(Query(range="1h")) == ["crit", "high-old", "high-new", "medium"]
    assert "low-old" in ids(Query())


def test_the_volume_chart_spreads_each_incidents_events_over_its_timeline_and_stacks_by_severity():
    chart = volume([View(incident("a", Severity.HIGH, 0, minutes=30, count=10), "open"),
                    View(incident("b", Severity.LOW, 0, minutes=0, count=4), "open")])  # fmt: skip
    assert chart is not None
    assert chart.slot == "1 min"
    assert chart.total == 14
    first = chart.bars[0]
    assert [(sev, n) for _, _, sev, n in first.parts] == [("low", 4), ("high", 5)]  # low at the bottom
    assert "5 high, 4 low" in first.label
    assert sum(n for b in chart.bars for _, _, _, n in b.parts) == 14
    assert chart.peak == 9
    assert volume([]) is None


def test_long_spans_get_coarser_slots():
    chart = volume([View(incident("a", Severity.HIGH, 0, minutes=60 * 24 * 10), "open")])
    assert chart is not None
    assert chart.slot == "6 h"
    assert len(chart.bars) <= 48


def test_entities_read_as_resource_names_and_open_where_an_analyst_would():
    deployment = ModelDeployment(name="gpt-4o", resource_id=ACCOUNT)
    project = AiProject(resource_id=f"{ACCOUNT}/projects/chat", account=ACCOUNT)
    alert = DefenderAlert(resource_id="/subscriptions/6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourcegroups/rg-ai/"
                                      "providers/microsoft.security/locations/westeurope/alerts/2516_abc")  # fmt: skip
    assert label(AiResource(resource_id=ACCOUNT)) == "oai-prod"
    assert label(deployment) == "oai-prod/gpt-4o"
    assert label(project) == "oai-prod/chat"
    assert label(alert) == "2516_abc"
    assert label(User(upn="mallory@contoso.com", object_id="7d3e")) == "mallory@contoso.com"
    where, url = link(AiResource(resource_id=ACCOUNT), "tenant-guid") or ("", "")
    assert where == "Azure portal"
    assert url == f"https://portal.azure.com/#@tenant-guid/resource{ACCOUNT}"
    assert link(deployment)[1].endswith("/accounts/oai-prod/deployments/gpt-4o")  # type: ignore[index]
    where, url = link(alert) or ("", "")
    assert where == "Defender for Cloud"
    assert url == ("https://portal.azure.com/#blade/Microsoft_Azure_Security/AlertBlade/alertId/2516_abc/subscriptionId/"
                   "6b1f3b8e-0c3a-4a8e-9d4f-2f7c1e5a9b10/resourceGroup/rg-ai/referencedFrom/alertDeepLink/location/westeurope")  # fmt: skip
    assert link(User(object_id="7d3e"))[0] == "Entra ID"  # type: ignore[index]
    assert link(Host(name="vm1")) is None  # nothing to open a bare host name in
    machine = Host(name="vm1", mde_machine_id="4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2f")
    assert link(machine) == ("Defender for Endpoint",
                             "https://security.microsoft.com/machines/4f1c0b9e2d7a6e3f8b5c1d0a9e8f7a6b5c4d3e2f/overview")  # fmt: skip
    assert link(Host(name="vm1", mde_machine_id="../../evil")) is None  # not an id: no link
    assert link(AiResource(resource_id="not an arm id")) is None


def test_times_read_in_the_consoles_zone_with_the_zone_named_and_ids_as_names():
    from zoneinfo import ZoneInfo

    from aegis.approvals.web import scalar, when

    paris = ZoneInfo("Europe/Paris")
    assert when(T0, paris) == "2026-11-20 10:00:00 CET"
    assert when("2026-07-01T12:00:00+00:00", paris) == "2026-07-01 14:00:00 CEST"
    assert when(None) == "-"
    assert when("not a time") == "not a time"
    assert scalar(ACCOUNT) == ("oai-prod", ACCOUNT)
    assert scalar("2026-11-20T09:00:00Z", paris) == ("2026-11-20 10:00:00 CET", "2026-11-20T09:00:00Z")
    assert scalar(1234567) == ("1,234,567", "")
    assert scalar("/subscriptions/<script>") == ("/subscriptions/<script>", "")  # not an id: text, escaped later


def test_a_step_says_where_its_decision_stands_for_the_person_looking():
    from aegis.approvals.explain import explain, target_names
    from aegis.approvals.identity import Principal
    from aegis.records import StepRecord

    step = StepRecord(key="k", incident="i", playbook="p", step="rotate", action="rotate_ai_keys",
                      target=f"{ACCOUNT}#both", params={}, status="awaiting_approval", approvals=2, reason=None,
                      aliases=(), corroboration="", requested_by="aegis", created=T0, expires=T0 + timedelta(hours=4))  # fmt: skip
    alice = Principal(name="alice@contoso.com", id="a1", roles=frozenset({"Aegis.Approver"}))
    x = explain(step, alice, may_decide=True)
    assert (x.state, x.may_act) == ("0 of 2: needs 2 people; yours would be the first", True)
    assert x.targets == ["oai-prod key1", "oai-prod key2"]
    assert x.undo.startswith("Cannot be undone")
    assert "fail to authenticate" in x.breaks
    approved = dataclasses.replace(step, approvers=("alice@contoso.com",), approver_ids=("a1",))
    assert explain(approved, alice, may_decide=True).state == "1 of 2: waiting for a second approver, not you"
    assert not explain(approved, alice, may_decide=True).may_act
    mine = dataclasses.replace(step, requested_by="alice@contoso.com", requested_by_id="a1")
    assert "you requested this step" in explain(mine, alice, may_decide=True).state
    reader = Principal(name="rita@contoso.com", id="r3", roles=frozenset({"Aegis.Reader"}))
    assert explain(step, reader, may_decide=False).state.endswith("(you may look, not decide)")
    assert target_names("user:7d3e") == ["user 7d3e"]


def test_what_enrichers_found_renders_as_tables_with_headings_never_three_deep():
    from aegis.approvals.web import _env

    result = {
        "window": ["2026-11-20T09:00:00+00:00", "2026-11-20T10:00:00+00:00"],
        "networks": [{"network": "203.0.113.0/24", "events": 37,
                      "ai_accounts": [{"account": ACCOUNT, "requests": 37}], "deep": [{"a": [{"b": [{"c": 1}]}]}]}],
        "note": "<b>not markup</b>",
    }  # fmt: skip
    html = _env.from_string('{% from "data.html" import show %}{{ show(v, zone) }}').render(v=result, zone=UTC)
    assert html.count("<table") == 1  # the list of records is a table; what is inside its cells is a line
    assert "<th>network</th>" in html
    assert "<th>ai accounts</th>" in html
    assert f'<span title="{ACCOUNT}">oai-prod</span>' in html
    assert "2026-11-20 09:00:00 UTC" in html
    assert "&lt;b&gt;not markup&lt;/b&gt;" in html
