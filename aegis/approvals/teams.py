"""Approval cards in the on-call Teams channel, through Microsoft Graph (msgraph-sdk).

A step that needs approval gets an Adaptive Card in the plan's `on_call` channel: the incident
summary, the exact step and parameters, and Approve / Deny links to the console (a link opens the
step's page; the decision itself is a POST there, so a link preview or a prefetch decides nothing).
When the step is decided, expires or is superseded, the card is updated to say so, without links.
An escalation is a reply in the card's thread that @mentions the members of the contact's group.

Incident fields are attacker-controlled: on the card they are `TextRun`s of a `RichTextBlock`,
which Teams renders as plain text (no markdown, so no disguised links); in HTML they are escaped.

Graph's `ChannelMessage.Send` and message updates are delegated permissions: the credential given
here must act for a user (a service account), not the app's managed identity (infra/README.md).
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from msgraph.generated.groups.item.members.graph_user.graph_user_request_builder import GraphUserRequestBuilder
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.chat_message_mention import ChatMessageMention
from msgraph.generated.models.chat_message_mentioned_identity_set import ChatMessageMentionedIdentitySet
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.teamwork_user_identity import TeamworkUserIdentity
from msgraph.generated.models.teamwork_user_identity_type import TeamworkUserIdentityType
from msgraph.graph_service_client import GraphServiceClient

from aegis.records import Incident, StepRecord
from aegis.respond import graph
from aegis.respond.connect import Connections
from aegis.respond.playbooks import Channel
from aegis.respond.record import call

CARD = "application/vnd.microsoft.card.adaptive"
MAX_MENTIONS = 20
T = TypeVar("T")


def card(step: StepRecord, incident: Incident | None, console_url: str) -> dict[str, Any]:
    """The Adaptive Card for `step`: the question while it awaits approval, the answer after."""
    link = f"{console_url.rstrip('/')}/console/approvals/{step.key}"
    waiting = step.status == "awaiting_approval"
    heading = "Approval needed" if waiting else f"Step {step.status.replace('_', ' ')}"
    facts = [
        ("Incident", f"{incident.severity.value.upper()} · {incident.title}" if incident else step.incident),
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
    actions = [{"type": "Action.OpenUrl", "title": "Open in the console", "url": link}]
    if waiting:
        actions = [
            {"type": "Action.OpenUrl", "title": "Approve…", "url": f"{link}?decision=approve"},
            {"type": "Action.OpenUrl", "title": "Deny…", "url": f"{link}?decision=deny"},
            *actions,
        ]
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4", "body": body, "actions": actions}  # fmt: skip


def _message(content: dict[str, Any]) -> ChatMessage:
    attachment_id = uuid.uuid4().hex
    return ChatMessage(
        body=ItemBody(content_type=BodyType.Html, content=f'<attachment id="{attachment_id}"></attachment>'),
        attachments=[
            ChatMessageAttachment(id=attachment_id, content_type=CARD, content=orjson.dumps(content).decode())
        ],
    )


@dataclass(frozen=True)
class Teams:
    """Posts and updates approval cards; each call opens a Graph client on its own event loop."""

    conn: Connections

    def _run(self, work: Callable[[GraphServiceClient], Awaitable[T]]) -> T:
        return graph.using(self.conn, work)

    def post_card(self, where: Channel, content: dict[str, Any]) -> str:
        """POST /teams/{team}/channels/{channel}/messages with the card; the message id."""

        async def work(client: GraphServiceClient) -> str:
            sent = (
                await client.teams.by_team_id(where.team)
                .channels.by_channel_id(where.channel)
                .messages.post(_message(content))
            )
            if sent is None or not sent.id:
                raise ValueError("Graph created the message but returned no id")
            return sent.id

        return self._run(work)

    def update_card(self, where: Channel, message: str, content: dict[str, Any]) -> None:
        """PATCH /teams/{team}/channels/{channel}/messages/{message} with the new card."""

        async def work(client: GraphServiceClient) -> None:
            messages = client.teams.by_team_id(where.team).channels.by_channel_id(where.channel).messages
            await messages.by_chat_message_id(message).patch(_message(content))

        self._run(work)

    def escalate(self, where: Channel, message: str, group: str, text: str) -> int:
        """Reply in the card's thread, @mentioning the group's members (at most 20); how many."""

        async def work(client: GraphServiceClient) -> int:
            query = GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(
                select=["id", "displayName"], top=MAX_MENTIONS
            )
            config = GraphUserRequestBuilder.GraphUserRequestBuilderGetRequestConfiguration(query_parameters=query)
            found = await client.groups.by_group_id(group).members.graph_user.get(request_configuration=config)
            people = [u for u in (found.value if found and found.value else []) if u.id][:MAX_MENTIONS]
            mentions, tags = [], []
            for n, person in enumerate(people):
                shown = person.display_name or person.id or ""
                tags.append(f'<at id="{n}">{html.escape(shown)}</at>')
                user = TeamworkUserIdentity(
                    id=person.id, display_name=shown, user_identity_type=TeamworkUserIdentityType.AadUser
                )
                mentioned = ChatMessageMentionedIdentitySet(user=user)
                mentions.append(ChatMessageMention(id=n, mention_text=shown, mentioned=mentioned))
            content = html.escape(text) + ("<br>" + " ".join(tags) if tags else "")
            reply = ChatMessage(body=ItemBody(content_type=BodyType.Html, content=content), mentions=mentions)
            messages = client.teams.by_team_id(where.team).channels.by_channel_id(where.channel).messages
            await messages.by_chat_message_id(message).replies.post(reply)
            return len(mentions)

        return self._run(work)


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else "-"
