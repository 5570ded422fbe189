"""Messages in Teams channels through the Bot Connector API, as the Azure Bot on the app's managed
identity: Graph lets an application post in a channel only to import history, so every message
Aegis posts (approval cards, escalations, SOC notices, the `notify` action) goes this way.

The documented REST contract, on azure-core (the SDKs' retries and transport), with a token for
the Bot Framework audience:

    POST {serviceUrl}/v3/conversations                          a new thread in a channel
    PUT  {serviceUrl}/v3/conversations/{thread}/activities/{id}  an activity, updated in place
    POST {serviceUrl}/v3/conversations/{thread}/activities       a reply in the thread
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest

from aegis.errors import ConfigurationError
from aegis.respond.actions import Notify, runs
from aegis.respond.connect import Connections, Context, send

SCOPE = "https://api.botframework.com/.default"
CARD = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class BotConnector:
    conn: Connections

    def _client(self) -> Any:
        bot = self.bot
        base = bot.service_url.rstrip("/")
        return self.conn.kept("bot", base, build=lambda: self.conn.rest_client(
            base, BearerTokenCredentialPolicy(self.conn.credential, SCOPE)))  # fmt: skip

    @property
    def bot(self) -> Any:
        if self.conn.bot is None:
            raise ConfigurationError("no Azure Bot configured (AEGIS_BOT_APP_ID and AEGIS_TENANT_ID): "
                                     "Teams messages go through the bot")  # fmt: skip
        return self.conn.bot

    def start_thread(self, channel: str, activity: dict[str, Any]) -> tuple[str, str]:
        """A new thread in the channel; (thread, activity id): where to update it and reply."""
        bot = self.bot
        body = {"isGroup": True, "bot": {"id": f"28:{bot.app_id}"}, "tenantId": bot.tenant, "activity": activity,
                "channelData": {"channel": {"id": channel}, "tenant": {"id": bot.tenant}}}  # fmt: skip
        answer = send(self._client(), HttpRequest("POST", "/v3/conversations", json=body)) or {}
        thread, activity_id = answer.get("id"), answer.get("activityId")
        if not isinstance(thread, str) or not isinstance(activity_id, str) or not thread or not activity_id:
            raise ValueError("the Bot Connector created the conversation but returned no thread or activity id")
        return thread, activity_id

    def update(self, thread: str, activity_id: str, activity: dict[str, Any]) -> None:
        path = f"/v3/conversations/{quote(thread, safe='')}/activities/{quote(activity_id, safe='')}"
        send(self._client(), HttpRequest("PUT", path, json={**activity, "id": activity_id}))

    def reply(self, thread: str, activity: dict[str, Any]) -> str | None:
        answer = send(self._client(), HttpRequest("POST", f"/v3/conversations/{quote(thread, safe='')}/activities",
                                                  json=activity)) or {}  # fmt: skip
        return answer.get("id") if isinstance(answer.get("id"), str) else None


def card_activity(content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [{"contentType": CARD, "content": content}]}


def text_activity(xml: str, mentions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A message of Teams' XML/HTML subset: the caller escapes what it did not write."""
    return {"type": "message", "textFormat": "xml", "text": xml, **({"entities": mentions} if mentions else {})}


@runs("notify")
def notify(p: Notify, ctx: Context) -> dict[str, Any]:
    """A new thread in the channel with the text, through the bot. The text is HTML-escaped:
    incident fields are attacker-shaped and must not become markup."""
    thread, activity = BotConnector(ctx.connections).start_thread(
        p.channel, text_activity(html.escape(p.text).replace("\n", "<br>")))  # fmt: skip
    return {"thread": thread, "message": activity}
