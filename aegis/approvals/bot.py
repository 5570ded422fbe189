"""Teams through the bot on the app's managed identity: approval cards, their updates,
escalations, and the decisions people take on the cards.

The cards go through the Bot Connector (`aegis.respond.botconnector`). A card's Approve and Deny
are Universal Actions (`Action.Execute`): Teams sends them to `/api/messages` as an
`adaptiveCard/action` invoke, signed by the Bot Framework (`botauth.py`). The person is the
activity's `from.aadObjectId`; they decide only as members of the plan's approver or escalation
groups (Graph `checkMemberGroups`: Teams carries no app roles), through the same
`Responder.decide` as the console, bound to the digest of the parameters the card showed; the
answer is the card as it now stands.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from azure.core.pipeline.policies import HeadersPolicy
from azure.core.rest import HttpRequest
from msgraph.generated.users.item.check_member_groups.check_member_groups_post_request_body import (
    CheckMemberGroupsPostRequestBody,
)
from msgraph.graph_service_client import GraphServiceClient

from aegis.approvals.identity import Principal, may_decide
from aegis.approvals.teams import card, group_members
from aegis.errors import AegisError
from aegis.records import Incident, StepRecord
from aegis.respond import graph
from aegis.respond.botconnector import CARD, BotConnector, card_activity, text_activity
from aegis.respond.connect import Connections, send
from aegis.respond.playbooks import Channel, ResponsePlan
from aegis.respond.record import Responder

log = structlog.get_logger("aegis.bot")


@dataclass(frozen=True)
class BotCards:
    """The approval cards through the bot (the `Cards` the approvals timer uses)."""

    conn: Connections

    def post_card(self, where: Channel, content: dict[str, Any]) -> str:
        """A new thread in the channel with the card; "<thread>|<activity>" to update and reply."""
        thread, activity = BotConnector(self.conn).start_thread(where.channel, card_activity(content))
        return f"{thread}|{activity}"

    def update_card(self, where: Channel, message: str, content: dict[str, Any]) -> None:
        thread, activity = _reference(message)
        BotConnector(self.conn).update(thread, activity, card_activity(content))

    def escalate(self, where: Channel, message: str, group: str, text: str) -> int:
        """A reply in the card's thread that @mentions the group's members (at most 20); how many."""
        thread, _ = _reference(message)
        people = group_members(self.conn, group)  # at most MAX_MENTIONS (teams.py)
        tags = [f"<at>{html.escape(name)}</at>" for _, name in people]
        mentions = [{"type": "mention", "text": tag, "mentioned": {"id": oid, "name": name}}
                    for tag, (oid, name) in zip(tags, people, strict=True)]  # fmt: skip
        xml = html.escape(text) + ("<br>" + " ".join(tags) if tags else "")
        BotConnector(self.conn).reply(thread, text_activity(xml, mentions))
        return len(mentions)


def _reference(message: str) -> tuple[str, str]:
    thread, sep, activity = message.rpartition("|")
    if not sep or not thread or not activity:
        raise CardGone(f"card reference {message[:80]!r} is not a bot conversation's: a new card is posted")
    return thread, activity


class CardGone(AegisError):
    """A card posted another way (Graph, before the bot): it cannot be updated, only posted again."""


def json_getter(conn: Connections) -> Callable[[str], Mapping[str, Any]]:
    """GET an https URL's JSON with the connections' transport (its CA, timeouts and retries): the
    Bot Framework's OpenID metadata and keys. No credential is sent."""

    def get(url: str) -> Mapping[str, Any]:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        client = conn.kept("plain", base, build=lambda: conn.rest_client(base, HeadersPolicy()))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        answer = send(client, HttpRequest("GET", path))
        return answer if isinstance(answer, dict) else {}

    return get


# --- decisions taken on a card ---

Membership = Callable[[str, list[str]], set[str]]  # (object id, groups) → those of them the person is in


def checked_groups(conn: Connections) -> Membership:
    """Graph POST /users/{id}/checkMemberGroups: which of the groups the person is in (transitively)."""

    def member_of(person: str, groups: list[str]) -> set[str]:
        if not groups:
            return set()

        async def work(client: GraphServiceClient) -> set[str]:
            body = CheckMemberGroupsPostRequestBody(group_ids=groups)
            found = await client.users.by_user_id(person).check_member_groups.post(body)
            return {g.lower() for g in (found.value if found and found.value else [])}

        return graph.using(conn, work)

    return member_of


@dataclass(frozen=True)
class Decisions:
    """Answers the invokes of the cards' Universal Actions."""

    responder: Responder
    plan: ResponsePlan
    member_of: Membership
    incident: Callable[[str], Incident | None]
    console_url: str
    after_approval: Callable[[StepRecord], None] | None = None  # execute mode: run the approved step

    def answer(self, activity: Mapping[str, Any]) -> dict[str, Any] | None:
        """The invoke response for an `adaptiveCard/action`; None for any other activity (nothing to say)."""
        if activity.get("type") != "invoke" or activity.get("name") != "adaptiveCard/action":
            return None
        action = _dict(_dict(activity.get("value")).get("action"))
        data, verb = _dict(action.get("data")), action.get("verb")
        key, digest = data.get("step"), data.get("digest")
        person = _dict(activity.get("from"))
        oid, name = str(person.get("aadObjectId") or "").lower(), str(person.get("name") or "")[:200]
        if verb not in ("approve", "deny") or not isinstance(key, str) or not isinstance(digest, str):
            return _message(400, "this card's action is not one Aegis knows")
        if not oid:
            return _message(401, "Teams did not say who you are (no Entra object id)")
        access, escalation = self.plan.access.approver_groups, self.plan.escalation
        groups = sorted({g.lower() for g in access} | {e.group.lower() for e in escalation})
        principal = Principal(name=name or oid, id=oid, groups=frozenset(self.member_of(oid, groups)))
        if not may_decide(principal, self.plan):
            log.warning("bot_decision_forbidden", step=key, person=oid)
            return _message(403, "you are not in a group the response plan lets decide steps (access.approver_groups, "
                                 "escalation): ask the on-call lead, or decide in the console")  # fmt: skip
        try:
            step = self.responder.decide(key, principal.name, principal.id, approve=verb == "approve",
                                         reason=str(data.get("reason") or "")[:500], digest=digest)  # fmt: skip
        except AegisError as exc:  # refused (expired, already decided, another digest, no reason) or unknown step
            return _message(200, str(exc))
        log.info("bot_decision", step=key, person=oid, verb=verb, status=step.status)
        if step.status == "approved" and self.after_approval is not None:
            self.after_approval(step)
        return self.card_of(step)

    def card_of(self, step: StepRecord) -> dict[str, Any]:
        return {"statusCode": 200, "type": CARD, "value": card(step, self.incident(step.incident), self.console_url)}


def _message(status: int, text: str) -> dict[str, Any]:
    return {"statusCode": status, "type": "application/vnd.microsoft.activity.message", "value": text}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
