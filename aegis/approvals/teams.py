"""The approval card, and the on-call groups' members it @mentions (Microsoft Graph).

A step that needs approval gets an Adaptive Card in the plan's `on_call` channel, posted by the bot
(`bot.py`): the incident summary, the exact step and parameters, and Approve / Deny as Universal
Actions (`Action.Execute`, bound to the step's key and the digest of the parameters shown; a denial
asks for its reason), with the console one click away. When the step is decided, expires or is
superseded, the card is updated to say so, without actions.

Incident fields are attacker-controlled: on the card they are `TextRun`s of a `RichTextBlock`,
which Teams renders as plain text (no markdown, so no disguised links); in HTML they are escaped.
"""

from __future__ import annotations

from typing import Any

import orjson
from msgraph.generated.groups.item.members.graph_user.graph_user_request_builder import GraphUserRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from aegis.records import Incident, StepRecord
from aegis.respond import graph
from aegis.respond.connect import Connections
from aegis.respond.record import call

MAX_MENTIONS = 20


def card(step: StepRecord, incident: Incident | None, console_url: str) -> dict[str, Any]:
    """The Adaptive Card for `step`: the question while it awaits approval, the answer after."""
    link = f"{console_url.rstrip('/')}/console/approvals/{step.key}"
    waiting = step.status == "awaiting_approval"
    heading = "Approval needed" if waiting else f"Step {step.status.replace('_', ' ')}"
    asset = incident.attributes.get("asset") if incident else None
    facts = [
        ("Incident", f"{incident.severity.value.upper()} · {incident.title}" if incident else step.incident),
        *([("Owner to call", _owner(asset))] if isinstance(asset, dict) else []),
        *([("Who uses the keys", "; ".join(step.dependents))] if step.dependents else []),
        ("Step", f"{step.playbook} / {step.step}"),
        ("Action", f"{step.action} on {step.target}"),
        ("Would call", call(step.action, step.params)),
        ("Parameters", orjson.dumps(step.params, option=orjson.OPT_SORT_KEYS).decode()),
        ("Digest", step.digest[:16]),
        ("Approvals", f"{len(step.approvers)} of {step.approvals} {', '.join(step.approvers)}".strip()),
        *([("Evidence", step.corroboration.upper() if step.corroboration.startswith("uncorroborated")
            else step.corroboration)] if step.corroboration else []),
        ("Requested by", step.requested_by),
        ("Expires" if waiting else "Reason", _iso(step.expires) if waiting else (step.reason or "-")),
    ]  # fmt: skip
    body: list[dict[str, Any]] = [{"type": "TextBlock", "text": heading, "weight": "Bolder", "size": "Medium"}]
    for label, value in facts:
        font = "Monospace" if label in {"Parameters", "Would call"} else "Default"
        body.append({"type": "RichTextBlock", "inlines": [
            {"type": "TextRun", "text": f"{label}: ", "weight": "Bolder"},
            {"type": "TextRun", "text": str(value)[:1000], "fontType": font},  # plain text: no markdown
        ]})  # fmt: skip
    actions: list[dict[str, Any]] = [{"type": "Action.OpenUrl", "title": "Open in the console", "url": link}]
    if waiting:
        bound = {"step": step.key, "digest": step.digest}  # the decision is for these parameters only
        reason = {"type": "Input.Text", "id": "reason", "label": "Why deny?", "isRequired": True, "maxLength": 500,
                  "errorMessage": "A denial needs a reason."}  # fmt: skip
        actions = [
            {"type": "Action.Execute", "title": "Approve", "verb": "approve", "data": bound, "style": "positive"},
            {"type": "Action.ShowCard", "title": "Deny…", "card": {
                "type": "AdaptiveCard", "body": [reason],
                "actions": [{"type": "Action.Execute", "title": "Deny", "verb": "deny", "data": bound,
                             "style": "destructive"}]}},
            *actions,
        ]  # fmt: skip
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4", "body": body, "actions": actions}  # fmt: skip


def group_members(conn: Connections, group: str, limit: int = MAX_MENTIONS) -> list[tuple[str, str]]:
    """GET /groups/{id}/members/microsoft.graph.user: (object id, display name) of up to `limit` members."""

    async def work(client: GraphServiceClient) -> list[tuple[str, str]]:
        fields = ["id", "displayName"]
        query = GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(select=fields, top=limit)
        config = GraphUserRequestBuilder.GraphUserRequestBuilderGetRequestConfiguration(query_parameters=query)
        found = await client.groups.by_group_id(group).members.graph_user.get(request_configuration=config)
        people = [u for u in (found.value if found and found.value else []) if u.id][:limit]
        return [(str(u.id), u.display_name or str(u.id)) for u in people]

    return graph.using(conn, work)


def _owner(asset: dict[str, Any]) -> str:
    return (f"{asset.get('owner') or 'not tagged'} ({asset.get('name')}, "
            f"{asset.get('criticality') or 'criticality not tagged'})")  # fmt: skip


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else "-"
