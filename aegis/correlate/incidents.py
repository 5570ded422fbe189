"""AI incident signals: what a SOC analyst receives. Built only by the correlator, from events.

Titles are rendered from a fixed set of placeholders with values cut to a bound and stripped of
control characters: an attacker-chosen user name or host name is text, never markup or format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from aegis.events import AiResource, Entity, Host, Ip, User
from aegis.records import safe_text


def incident_id(detection: str, group: str, first_event: str) -> str:
    """Deterministic: the same detection, group and first event always give the same id."""
    return hashlib.sha256(f"{detection}\x00{group}\x00{first_event}".encode()).hexdigest()[:24]


def render_title(template: str, *, kind: str, entities: Iterable[Entity], count: int, group: str) -> str:
    values: dict[str, str] = {"group": group, "count": str(count), "kind": kind}
    parts = set(group.split("|"))
    for ent in entities:
        if isinstance(ent, AiResource):
            values.setdefault("ai_resource", ent.name or ent.resource_id)
        elif isinstance(ent, Ip):  # the network the rule grouped on, when it grouped on one
            values.setdefault("ip", ent.prefix if ent.prefix and ent.prefix in parts else ent.key)
        elif isinstance(ent, User):
            values.setdefault("user", ent.upn or ent.name or ent.object_id or "")
        elif isinstance(ent, Host):
            values.setdefault("host", ent.name or ent.key)
    safe = {k: safe_text(v) for k, v in values.items()}
    return template.format_map(_Default(safe))[:200]


class _Default(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "unknown"
